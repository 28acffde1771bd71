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

// Route implements Router. It completes the planner's plan for the
// session: Shard for Single and Any plans, the query answering EXPLAIN
// (pgshard) and SHOW pgshard.*, Atomic for a split INSERT; it refuses
// what the proxy cannot run over several shards (and UPDATE/DELETE
// without a key unless AllowBroadcast). A cached plan's decision costs no
// allocation.
func (r PlanRouter) Route(q Query) (plan.Plan, error) {
	if q.SQL == "" {
		return plan.Plan{Kind: plan.Any, Shard: r.Default}, nil
	}
	if q.Describe {
		shards := r.Planner.DescribeShards(q.SQL)
		return plan.Plan{Kind: plan.Any, Shard: shards[0], DescribeShards: shards}, nil
	}
	var params [][]byte
	var formats []int16
	var oids []uint32
	if q.Bind != nil {
		var err error
		if formats, params, err = bindParams(q.Bind); err != nil {
			return refused(&plan.RefusalError{Code: wire.SQLStateProtocolViolation, Message: "invalid Bind message format"})
		}
		oids = ParamOIDs(q.Parse)
	}
	p, err := r.Planner.RouteHint(q.SQL, plan.Hint{Shard: q.HintShard, Key: q.HintKey}, params, formats, oids)
	if err != nil {
		return plan.Plan{Kind: plan.Single, Shard: r.Default}, nil
	}
	if p.Stmt == plan.StmtOther && !p.Explain {
		// DDL may change a table's columns: key positions are learned
		// again.
		r.Planner.ForgetKeyPositions()
	}
	if p.Explain {
		return plan.Plan{Kind: plan.Any, Shard: r.Default, Explain: true, SQL: explainSQL(p, q.SQL)}, nil
	}
	switch p.Kind {
	case plan.Single:
		p.Shard = p.Shards[0]
		p.Anywhere = p.Anywhere && p.Reach == plan.ReachDefault
		return p, nil
	case plan.Any:
		switch {
		case p.Hint != nil:
			// PostgreSQL accepts pgshard.* as custom parameters, so the SET
			// runs where the session is, like any SET; the session also
			// keeps the hint for routing.
			p.Shard = r.Default
		case p.Show == plan.ShowRoute:
			p.Shard, p.SQL = r.Default, showRouteSQL(q)
		case p.Show == plan.ShowShards:
			p.Shard, p.SQL = r.Default, showShardsSQL(r.Planner.Map(), r.EndpointState)
		default:
			p.Shard = p.Shards[0]
		}
		p.ReplicaSafe = false
		return p, nil
	case plan.Refused:
		if p.InTx {
			// Allowed only in the session's open transaction: the session
			// places it, or refuses it with p.Err.
			p.Kind, p.Shard = plan.Single, r.Default
			return p, nil
		}
		if p.NeedKeyPosition != "" && len(p.Shards) > 0 {
			p.Shard = p.Shards[0]
		} else {
			p.NeedKeyPosition = ""
		}
		return p, p.Err
	case plan.CopyIn:
		return p, nil
	case plan.Scatter, plan.Utility, plan.CopyOut:
		if ok, err := r.several(&p); !ok {
			p.Kind, p.Err = plan.Refused, err
			return p, err
		}
		return p, nil
	}
	return refused(&plan.RefusalError{Code: wire.SQLStateFeatureNotSupported, Message: fmt.Sprintf("unknown plan kind %s", p.Kind)})
}

// several checks a plan over several shards, keeping only what the proxy
// runs: reads (merged, or a UNION ALL's parts concatenated), COPY TO, a
// split INSERT (one transaction per shard, all committed or none), DDL,
// and UPDATE/DELETE without a key when AllowBroadcast says so.
func (r PlanRouter) several(p *plan.Plan) (bool, *plan.RefusalError) {
	switch {
	case p.Stmt == plan.StmtSelect && p.ReadOnly && (p.PerShardSQL == nil || p.PerShardKeys):
		// (With PerShardKeys, each shard's statement has its own keys.)
		p.Kind, p.PerShardRows = plan.Scatter, nil
		return true, nil
	case p.Stmt == plan.StmtSelect && p.ReadOnly:
		// A UNION ALL whose parts are on different shards: each shard
		// its statement, the results concatenated.
		p.Kind, p.ShardSQL, p.Merge, p.Calls, p.PerShardRows = plan.Scatter, "", nil, nil, nil
		return true, nil
	case p.Stmt == plan.StmtCopy && p.ReadOnly:
		p.Kind, p.ShardSQL, p.Merge, p.Calls, p.PerShardSQL, p.PerShardRows, p.ReplicaSafe = plan.CopyOut, "", nil, nil, nil, nil, false
		return true, nil
	case p.Stmt == plan.StmtInsert && p.PerShardSQL != nil:
		// The rows of each shard in one transaction per shard, all
		// committed only when every shard succeeded.
		p.Kind, p.Atomic, p.ShardSQL, p.Merge, p.Calls, p.ReplicaSafe = plan.Scatter, true, "", nil, nil, false
		return true, nil
	case p.Broadcast && p.Stmt == plan.StmtOther:
		p.Kind, p.ShardSQL, p.Merge, p.Calls, p.PerShardRows, p.ReplicaSafe = plan.Utility, "", nil, nil, nil, false
		return true, nil
	case p.Broadcast && (p.Stmt == plan.StmtUpdate || p.Stmt == plan.StmtDelete):
		if !r.AllowBroadcast {
			return false, &plan.RefusalError{
				Code:    wire.SQLStateFeatureNotSupported,
				Message: fmt.Sprintf("%s without a condition on the sharding key would run on every shard, which broadcast_writes forbids", stmtName(p.Stmt)),
				Hint:    "Add a condition on the sharding key, or set broadcast_writes: allow (each shard then commits on its own; all as one with transactions.cross_shard: two_phase).",
			}
		}
		p.Kind, p.PerShardSQL, p.PerShardRows, p.Merge, p.Calls, p.ReplicaSafe = plan.Scatter, nil, nil, nil, nil, false
		return true, nil
	}
	return false, &plan.RefusalError{
		Code:    wire.SQLStateFeatureNotSupported,
		Message: fmt.Sprintf("this statement needs several shards (%s); pgshard runs only reads over several shards so far", p.Decision()),
		Hint:    "Add a condition on the sharding key, or route it with /* pgshard: shard=NAME */.",
	}
}

// refused is the plan and error of a refusal the router makes itself.
func refused(err *plan.RefusalError) (plan.Plan, error) {
	return plan.Plan{Kind: plan.Refused, Err: err}, err
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
