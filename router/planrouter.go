package router

import (
	"fmt"

	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
)

// PlanRouter routes with the SQL-aware planner (package router/plan) over
// a shard map. Read-only SELECTs over several shards become scatter plans,
// multi-row INSERTs with rows for several shards are split (one
// transaction per shard, all committed or none), COPY into a sharded table
// is split by key, and UPDATE/DELETE without a key run everywhere when
// AllowBroadcast says so; other statements over several shards are
// refused with 0A000. A statement the planner
// cannot parse goes to the default shard, whose server reports the error
// exactly.
type PlanRouter struct {
	Planner *plan.Planner
	Default string
	// AllowBroadcast lets UPDATE and DELETE without a key condition run on
	// every shard (each shard commits on its own: not atomic across
	// shards); otherwise they are refused.
	AllowBroadcast bool
	// EndpointState, when set, describes a server of the map for SHOW
	// SHARDS ("up", "down", "up, lag 0 B / 0.0 s", ...).
	EndpointState func(addr string) string
}

// SetKeyPosition implements KeyPositioner.
func (r PlanRouter) SetKeyPosition(table string, pos int) { r.Planner.SetKeyPosition(table, pos) }

// Route implements Router.
func (r PlanRouter) Route(q Query) (Plan, error) {
	if q.SQL == "" {
		return Plan{Kind: KindAny, Shard: r.Default}, nil
	}
	if q.Describe {
		shards := r.Planner.DescribeShards(q.SQL)
		return Plan{Kind: KindAny, Shard: shards[0], DescribeShards: shards}, nil
	}
	var params [][]byte
	var formats []int16
	var oids []uint32
	if q.Bind != nil {
		var err error
		if formats, params, err = bindParams(q.Bind); err != nil {
			return Plan{}, &RefusedError{Code: wire.SQLStateProtocolViolation, Message: "invalid Bind message format"}
		}
		oids = ParamOIDs(q.Parse)
	}
	p, err := r.Planner.RouteHint(q.SQL, plan.Hint{Shard: q.HintShard, Key: q.HintKey}, params, formats, oids)
	if err != nil {
		return Plan{Kind: KindSingle, Shard: r.Default}, nil
	}
	if p.Stmt == plan.StmtOther && !p.Explain {
		// DDL may change a table's columns: key positions are learned
		// again.
		r.Planner.ForgetKeyPositions()
	}
	if p.Explain {
		return Plan{Kind: KindAny, Shard: r.Default, SQL: explainSQL(p, q.SQL)}, nil
	}
	switch p.Kind {
	case plan.Single:
		return Plan{Kind: KindSingle, Shard: p.Shards[0], Replica: p.ReplicaSafe}, nil
	case plan.Default:
		if p.Stmt == plan.StmtTx || p.Stmt == plan.StmtSet || p.Stmt == plan.StmtShow {
			return Plan{Kind: KindAny, Shard: p.Shards[0]}, nil
		}
		return Plan{Kind: KindSingle, Shard: p.Shards[0], Replica: p.ReplicaSafe, AnyShard: p.Anywhere}, nil
	case plan.Refused:
		re := &RefusedError{Code: p.Err.Code, Message: p.Err.Message, Hint: p.Err.Hint}
		if p.NeedKeyPosition != "" && len(p.Shards) > 0 {
			re.NeedKeyPosition, re.KeyColumn, re.Shard = p.NeedKeyPosition, p.NeedKeyColumn, p.Shards[0]
		}
		if p.InTx {
			return Plan{Kind: KindSingle, Shard: r.Default, InTxOnly: re}, nil
		}
		return Plan{}, re
	case plan.All, plan.Multi:
		if p.Stmt == plan.StmtSelect && p.ReadOnly && p.PerShardSQL == nil {
			return Plan{Kind: KindScatter, Shards: p.Shards, SQL: p.ShardSQL, Merge: p.Merge, ReadOnly: true, Replica: p.ReplicaSafe, Calls: p.Calls}, nil
		}
		if p.Stmt == plan.StmtSelect && p.ReadOnly {
			// A UNION ALL whose parts are on different shards: each shard
			// its statement, the results concatenated.
			return Plan{Kind: KindScatter, Shards: p.Shards, PerShardSQL: p.PerShardSQL, ReadOnly: true, Replica: p.ReplicaSafe}, nil
		}
		if p.Stmt == plan.StmtCopy && p.ReadOnly {
			return Plan{Kind: KindCopyOut, Shards: p.Shards, Copy: p.Copy}, nil
		}
		if p.Stmt == plan.StmtInsert && p.PerShardSQL != nil {
			// The rows of each shard in one transaction per shard, all
			// committed only when every shard succeeded.
			return Plan{Kind: KindScatter, Shards: p.Shards, PerShardSQL: p.PerShardSQL, RowOrder: p.PerShardRows, Atomic: true}, nil
		}
		if p.Broadcast && p.Stmt == plan.StmtOther {
			return Plan{Kind: KindUtility, Shards: p.Shards, PerShardSQL: p.PerShardSQL}, nil
		}
		if p.Broadcast && (p.Stmt == plan.StmtUpdate || p.Stmt == plan.StmtDelete) {
			if !r.AllowBroadcast {
				return Plan{}, &RefusedError{
					Code:    "0A000",
					Message: fmt.Sprintf("%s without a condition on the sharding key would run on every shard, which broadcast_writes forbids", stmtName(p.Stmt)),
					Hint:    "Add a condition on the sharding key, or set broadcast_writes: allow (each shard then commits on its own).",
				}
			}
			return Plan{Kind: KindScatter, Shards: p.Shards, SQL: p.ShardSQL}, nil
		}
	case plan.CopyIn:
		return Plan{Kind: KindCopyIn, Shards: p.Shards, Copy: p.Copy}, nil
	case plan.SetHint:
		// PostgreSQL accepts pgshard.* as custom parameters, so the SET
		// runs where the session is, like any SET; the session also keeps
		// the hint for routing.
		return Plan{Kind: KindAny, Shard: r.Default, SetHint: &HintChange{Name: p.Hint.Name, Value: p.Hint.Value}}, nil
	case plan.ShowRoute:
		return Plan{Kind: KindAny, Shard: r.Default, SQL: showRouteSQL(q)}, nil
	case plan.ShowShards:
		return Plan{Kind: KindAny, Shard: r.Default, SQL: showShardsSQL(r.Planner.Map(), r.EndpointState)}, nil
	}
	return Plan{}, &RefusedError{
		Code:    "0A000",
		Message: fmt.Sprintf("this statement needs several shards (%s); pgshard runs only reads over several shards so far", p.Kind),
		Hint:    "Add a condition on the sharding key, or route it with /* pgshard: shard=NAME */.",
	}
}

func stmtName(s plan.Stmt) string {
	if s == plan.StmtUpdate {
		return "UPDATE"
	}
	return "DELETE"
}

// bindParams reads the parameter format codes and values of a Bind body
// (values alias the body).
func bindParams(body []byte) ([]int16, [][]byte, error) {
	b, err := wire.DecodeBind(body)
	if err != nil {
		return nil, nil, err
	}
	formats := b.AppendParamFormats(make([]int16, 0, b.NumParamFormats()))
	params := b.AppendParams(make([][]byte, 0, b.NumParams()))
	return formats, params, nil
}

// ParamOIDs reads the parameter type OIDs of a Parse message body (nil
// when it is malformed).
func ParamOIDs(body []byte) []uint32 {
	p, err := wire.DecodeParse(body)
	if err != nil {
		return nil
	}
	return p.AppendParamTypes(make([]uint32, 0, p.NumParamTypes()))
}
