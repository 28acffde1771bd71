package router

import (
	"strings"

	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/router/sqllex"
	"github.com/pgshard/pgshard/wire"
)

// HintRouter routes by a leading comment hint, `/* pgshard: shard=NAME */`,
// and sends everything else to the default shard. It is what a cluster
// of several shards uses until SQL-aware routing (package router/plan)
// is wired in; a hint naming an unknown shard is refused (22023).
type HintRouter struct {
	Default string
	Shards  map[string]bool
}

// hintPrefix starts a routing hint comment.
const hintPrefix = "pgshard:"

// Route implements Router.
func (h HintRouter) Route(q Query) (plan.Plan, error) {
	sql := q.SQL
	shard, ok := ShardHint(sql)
	if !ok {
		if FollowsSession(sql) {
			return plan.Plan{Kind: plan.Any, Shard: h.Default}, nil
		}
		return plan.Plan{Kind: plan.Single, Shard: h.Default}, nil
	}
	if !h.Shards[shard] {
		err := &plan.RefusalError{Code: wire.SQLStateInvalidParameterValue, Message: "pgshard: hint names unknown shard \"" + shard + "\""}
		return plan.Plan{Kind: plan.Refused, Err: err}, err
	}
	return plan.Plan{Kind: plan.Single, Shard: shard}, nil
}

// ShardHint returns the shard named by a leading `/* pgshard: shard=NAME */`
// comment of sql (white space before the comment is allowed).
func ShardHint(sql string) (string, bool) {
	s := strings.TrimLeft(sql, " \t\r\n")
	if !strings.HasPrefix(s, "/*") {
		return "", false
	}
	end := strings.Index(s, "*/")
	if end < 0 {
		return "", false
	}
	body := strings.TrimSpace(s[2:end])
	if !strings.HasPrefix(body, hintPrefix) {
		return "", false
	}
	for _, f := range strings.Fields(body[len(hintPrefix):]) {
		if v, ok := strings.CutPrefix(f, "shard="); ok && v != "" {
			return v, true
		}
	}
	return "", false
}

// FollowsSession reports whether sql is a statement with no data of its
// own to route — transaction control, SET, RESET, SHOW — which belongs
// wherever the session currently is.
func FollowsSession(sql string) bool {
	l := sqllex.Lexer{S: sql}
	switch w := strings.ToLower(l.Word()); w {
	case "begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release", "set", "reset", "show":
		return true
	}
	return false
}
