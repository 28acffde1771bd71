package plan

import (
	"github.com/pgshard/pgshard/router/merge"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
)

// Kind says how the proxy runs a statement: the one routing kind, from
// the planner's decision (Plan.Reach) and the statement.
type Kind uint8

// Plan kinds.
const (
	// Single runs on one shard: Plan.Shards[0] as planned, Plan.Shard as
	// the router returns it.
	Single Kind = iota + 1
	// Any has no target of its own (transaction control, SET, SHOW, SET
	// pgshard.*, SHOW pgshard.*, EXPLAIN (pgshard)): it runs where the
	// session already is, else on Plan.Shard.
	Any
	// Scatter runs on the shards in Plan.Shards, two or more or every
	// shard of a distribution: a read whose results are merged
	// (Plan.Merge, with Plan.ShardSQL for the shards), a UNION ALL or a
	// multi-row INSERT split by shard (Plan.PerShardSQL), an UPDATE or
	// DELETE without a key condition (Plan.Broadcast).
	Scatter
	// Utility is DDL or another utility statement on every shard in
	// Plan.Shards, all or none (the shards in Plan.PerShardSQL get that
	// statement instead: a DROP with IF EXISTS).
	Utility
	// CopyIn is COPY into a sharded table FROM STDIN: the proxy splits the
	// rows by the key column (Plan.Copy) over Plan.Shards.
	CopyIn
	// CopyOut is COPY ... TO STDOUT over several shards (Plan.Shards): the
	// shards' data is concatenated.
	CopyOut
	// Refused statements must not run: Plan.Err says why (SQLSTATE 0A000
	// unless it says otherwise).
	Refused
)

var kindNames = [...]string{"invalid", "single", "any", "scatter", "utility", "copy-in", "copy-out", "refused"}

// String returns the kind's lower-case name.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "invalid"
}

// Several reports whether plans of kind k run on several shards at once
// (Scatter, Utility, CopyIn, CopyOut).
func (k Kind) Several() bool { return k >= Scatter && k <= CopyOut }

// Reach says how the planner chose a plan's shards.
type Reach uint8

// Reaches.
const (
	// ReachNone: no shard (a refusal, SET pgshard.*, SHOW pgshard.*).
	ReachNone Reach = iota
	// ReachKey: the shard(s) of the statement's key values, or the shard
	// a hint names.
	ReachKey
	// ReachAll: every shard of the statement's distribution (or of the
	// map, for DDL naming no table of it).
	ReachAll
	// ReachDefault: the default shard, for a statement that touches no
	// sharded table (SELECT 1, catalog queries, unsharded tables) and for
	// session and transaction control.
	ReachDefault
)

// Show is a SHOW pgshard.* statement, which the router answers.
type Show uint8

// SHOW pgshard.* statements.
const (
	ShowNone   Show = iota
	ShowRoute       // SHOW pgshard.route
	ShowShards      // SHOW pgshard.shards: the map's shards and epoch
)

// Decision names the planner's decision as EXPLAIN (pgshard) and tests
// print it: single, multi, all, default, refused, copy-in, set-hint,
// show-route or show-shards.
func (p *Plan) Decision() string {
	switch {
	case p.Kind == Refused:
		return "refused"
	case p.Kind == CopyIn:
		return "copy-in"
	case p.Hint != nil:
		return "set-hint"
	case p.Show == ShowRoute:
		return "show-route"
	case p.Show == ShowShards:
		return "show-shards"
	case p.Reach == ReachDefault:
		return "default"
	case p.Kind == Single:
		return "single"
	case p.Reach == ReachAll:
		return "all"
	case p.Reach == ReachKey:
		return "multi"
	}
	return "invalid"
}

// defaultKind is the kind of statement s on the default shard:
// transaction control, SET and SHOW run wherever the session is.
func defaultKind(s Stmt) Kind {
	if s == StmtTx || s == StmtSet || s == StmtShow {
		return Any
	}
	return Single
}

// Stmt is the kind of statement a plan is for.
type Stmt uint8

// Statement kinds.
const (
	StmtOther  Stmt = iota // DDL, utility statements, EXPLAIN, ...
	StmtSelect             // SELECT, VALUES, TABLE
	StmtInsert             // INSERT
	StmtUpdate             // UPDATE
	StmtDelete             // DELETE
	StmtCopy               // COPY
	StmtTx                 // transaction control; see Plan.Tx
	StmtSet                // SET / RESET of a session parameter
	StmtShow               // SHOW
	StmtProc               // DO, CALL: code whose tables pgshard cannot see
)

// TxOp is the transaction-control operation of a StmtTx plan.
type TxOp uint8

// Transaction operations.
const (
	TxNone       TxOp = iota
	TxBegin           // BEGIN / START TRANSACTION
	TxCommit          // COMMIT / END
	TxRollback        // ROLLBACK / ABORT
	TxSavepoint       // SAVEPOINT
	TxRelease         // RELEASE SAVEPOINT
	TxRollbackTo      // ROLLBACK TO SAVEPOINT
	TxPrepare         // PREPARE TRANSACTION (two-phase: not supported across shards)
	TxCommitPrepared
	TxRollbackPrepared
)

// Plan is the routing decision for one execution of a statement: what
// the planner found (shards, table, statement, read/write, transaction
// effect, refusal) and, once the router's entry point (router.Router)
// returns it, all the proxy needs to run it. Slices and maps in a Plan,
// and Err, may be shared with the plan cache: callers must not modify
// them.
type Plan struct {
	// Kind says how the statement runs; the proxy switches on it.
	Kind Kind
	Stmt Stmt
	// Reach says how the shards were chosen.
	Reach Reach
	// Shards are the target shards: one for Single (and Any on the
	// default shard), two or more (sorted) or every shard of a
	// distribution for Scatter, Utility, CopyIn and CopyOut; nil for
	// Refused, SET pgshard.* and SHOW pgshard.*.
	Shards []string
	// Shard is the target of a Single or Any plan the router returns
	// (Shards[0], or the default shard); for a Refused plan with
	// NeedKeyPosition, a shard holding the table.
	Shard string
	// Table is the first sharded table of the statement ("public.users"),
	// or "" when there is none.
	Table string
	// ReadOnly is true for a SELECT without FOR UPDATE/SHARE, without a
	// data-modifying CTE and without a known volatile or session-changing
	// function (nextval, setval, pg_advisory_*, set_config, ...): safe
	// for a replica and safe to retry.
	ReadOnly bool
	// ReplicaSafe is ReadOnly with every function it calls known not to
	// write (PostgreSQL's own functions on the list in safefuncs.go): a
	// user-defined function may write even inside a SELECT, so only
	// these statements may go to a streaming replica.
	ReplicaSafe bool
	// Tx is the transaction operation of a StmtTx plan.
	Tx TxOp
	// Merge says how to combine the shards' results of a Scatter read.
	// Nil means concatenate (or a single target).
	Merge *merge.Spec
	// ShardSQL is the statement to send the shards of a Scatter when it
	// differs from the client's (a scatter SELECT rewritten for merging:
	// avg as sum and count, LIMIT n OFFSET m pushed down as LIMIT n+m,
	// hidden sort or group columns); "" means send the client's text.
	ShardSQL string
	// PerShardSQL is the statement each shard gets when they differ: a
	// multi-row INSERT whose rows go to several shards (only each
	// shard's rows), a UNION ALL whose parts read different shards, a
	// DROP with IF EXISTS on the shards other than the default one, a
	// read with only each shard's keys in its key list (PerShardKeys).
	PerShardSQL map[string]string
	// PerShardRows gives, for each shard of a split INSERT's PerShardSQL,
	// the 0-based positions in the client's VALUES list of the rows it
	// got, in order (to return INSERT ... RETURNING rows in the client's
	// order).
	PerShardRows map[string][]int
	// Atomic runs a Scatter in a transaction on every shard, all
	// committed or all rolled back (a split INSERT).
	Atomic bool
	// PerShardKeys says PerShardSQL is a read whose key condition is a
	// list of keys (key IN (...), key = ANY(ARRAY[...])) over several
	// shards: each shard's statement has only that shard's keys in the
	// list; Merge and ShardSQL apply as usual.
	PerShardKeys bool
	// Calls are the functions a Scatter SELECT calls (target list,
	// ORDER BY, HAVING) that are not aggregates the planner knows; the
	// proxy refuses the statement when one is a user-defined aggregate.
	Calls []string
	// Broadcast marks an UPDATE or DELETE on a sharded table that has no
	// condition on the key, or DDL: it runs on every shard. The router
	// allows or refuses an UPDATE or DELETE by configuration.
	Broadcast bool
	// Copy describes a CopyIn, or the options of a CopyOut.
	Copy *CopySpec
	// Hint is the SET/RESET of a routing hint (an Any plan): the session
	// keeps it for later statements.
	Hint *HintSet
	// Show is a SHOW pgshard.* (an Any plan), answered by the router's SQL.
	Show Show
	// Hinted is true when a hint (comment or session) decided the target.
	Hinted bool
	// Anywhere marks a Single plan on the default shard for a statement
	// that names no table of the map and cannot write one (SELECT 1,
	// SELECT now(), catalog queries, NOTIFY; not a SELECT calling a
	// function that may be the user's own, one not on the built-in list
	// nor qualified with pg_catalog): it runs alike on every shard, so a
	// session held on another shard (a transaction) runs it there.
	Anywhere bool
	// Explain is true for EXPLAIN (pgshard) stmt: the planner's plan is
	// stmt's, to be described to the client rather than run; the router
	// returns an Any plan whose SQL answers it.
	Explain bool
	// SQL, when set on a Single or Any plan, replaces the client's simple
	// query: EXPLAIN (pgshard) and SHOW pgshard.* are answered by a query
	// the router builds.
	SQL string
	// DescribeShards, for a router.Query with Describe set, are the
	// shards any of which can describe the statement (the schema is the
	// same on every shard), the preferred first; nil means Shard only.
	DescribeShards []string
	// Err says why, for Refused; with InTx, why the statement runs only
	// inside the session's open transaction.
	Err *RefusalError
	// InTx marks a DO or CALL that may run only on the shard of the
	// session's open transaction (the client chose that shard): the
	// planner plans it Refused, the router Single on the default shard,
	// and the session refuses it with Err outside a transaction.
	InTx bool
	// NeedKeyPosition, on a Refused INSERT without a column list into a
	// sharded table, names the table ("public.users") whose key column
	// position (among its columns, from the catalog) would let the
	// planner route it: see Planner.SetKeyPosition. Shards[0] (and Shard
	// once routed) is a shard holding the table.
	NeedKeyPosition string
	// NeedKeyColumn is that table's sharding key column.
	NeedKeyColumn string
	// Moving is set only while the map has a moving-interval marker
	// (shardmap.Moving, step hold) on the statement's distribution
	// MovingDist: the ID of the marker whose interval holds a key of the
	// statement, or whose From shard a write without a key (a scatter
	// UPDATE or DELETE, a COPY FROM) reaches. The proxy holds such a
	// statement unless it runs in a transaction already open on a server.
	Moving, MovingDist string
	// RowKey, on a Single plan of a statement on a table the map marks
	// cacheable (shardmap.TableCache) that names one key value, is that
	// value as PostgreSQL prints it (the rows the proxy's cache keys by
	// and invalidates); "" otherwise.
	RowKey string
	// PointRead marks a Single read, with RowKey, of only the RowKey
	// rows of Table: a plain SELECT of that one table without a join,
	// subquery, CTE, locking clause or function call (see
	// pointReadShape), whose result the proxy may cache.
	PointRead bool
}

// CopySpec says how to split the rows of COPY ... FROM STDIN over shards.
type CopySpec struct {
	// KeyColumn is the 0-based position of the key column in each row,
	// from the statement's column list.
	KeyColumn int
	// Columns is the number of columns in each row.
	Columns int
	// Names are the columns' names, from the statement's column list
	// (for messages).
	Names []string
	// Format is "text", "csv" or "binary".
	Format string
	// Delimiter separates columns ('\t' for text, ',' for csv by default).
	Delimiter byte
	// Header is true when the first line (csv) is a header to skip.
	Header bool

	dist *shardmap.Distribution
}

// Shard returns the shard of a row whose key column holds key, in the
// COPY's format (binary: the field's bytes in binary format; otherwise
// the de-escaped text). A NULL key has no shard.
func (c *CopySpec) Shard(key []byte, binary bool) (string, error) {
	return shardFor(c.dist, string(key), binary)
}

// HintSet is a SET or RESET of pgshard.shard or pgshard.key.
type HintSet struct {
	Name  string // "shard" or "key"
	Value string // "" for RESET
	Reset bool
}

// Hint is routing state the session keeps from SET pgshard.shard /
// pgshard.key and passes to every Route call; the zero value means none.
// A leading /* pgshard: shard=... */ or key=... comment overrides it for
// one statement.
type Hint struct {
	Shard string // route everything to this shard
	Key   string // route as if the statement's key were this value
}

// RefusalError is why a statement cannot run through the proxy. It is a
// PostgreSQL-style error the session sends to the client as is.
type RefusalError struct {
	Code    string // SQLSTATE, wire.SQLStateFeatureNotSupported unless said otherwise
	Message string // what cannot be done and why
	Hint    string // what to do instead
	// MultiStatement marks the refusal of a query string whose
	// statements are not all for one shard (multiStatement): a session
	// whose transactions may span shards runs it statement by statement.
	MultiStatement bool
}

// Error implements error.
func (e *RefusalError) Error() string {
	if e.Hint == "" {
		return e.Message
	}
	return e.Message + " (hint: " + e.Hint + ")"
}

func refusal(msg, hint string) *RefusalError {
	return &RefusalError{Code: wire.SQLStateFeatureNotSupported, Message: msg, Hint: hint}
}
