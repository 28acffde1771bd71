package plan

import (
	"github.com/pgshard/pgshard/router/merge"
	"github.com/pgshard/pgshard/shardmap"
)

// Kind says where a statement goes.
type Kind uint8

// Plan kinds.
const (
	// Single targets exactly one shard, Plan.Shards[0].
	Single Kind = iota + 1
	// Multi targets the shards in Plan.Shards (two or more): an IN list or
	// OR of keys, or a multi-row INSERT split with Plan.PerShardSQL.
	Multi
	// All targets every shard of a distribution (scatter), listed in
	// Plan.Shards. SELECTs carry a Plan.Merge; UPDATE/DELETE set
	// Plan.Broadcast.
	All
	// Default targets the default shard (Plan.Shards[0]): statements that
	// touch no sharded table (SELECT 1, catalog queries, unsharded
	// tables), session and transaction control (SET, SHOW, BEGIN, ...).
	Default
	// Refused statements must not run: Plan.Err says why (SQLSTATE 0A000).
	Refused
	// CopyIn is COPY into a sharded table FROM STDIN: the proxy splits the
	// rows by the key column (Plan.Copy) and sends each shard its rows.
	CopyIn
	// SetHint is SET/RESET of pgshard.shard or pgshard.key: the session keeps
	// Plan.Hint and answers the client itself; nothing goes to a shard.
	SetHint
	// ShowRoute is SHOW pgshard.route: the session answers it itself.
	ShowRoute
	// ShowShards is SHOW pgshard.shards: the map's shards and epoch.
	ShowShards
)

var kindNames = [...]string{"invalid", "single", "multi", "all", "default", "refused", "copy-in", "set-hint", "show-route", "show-shards"}

// String returns the kind's lower-case name, as in golden files.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "invalid"
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

// Plan is the routing decision for one execution of a statement. Slices
// and maps in a Plan may be shared with the plan cache: callers must not
// modify them.
type Plan struct {
	Kind Kind
	Stmt Stmt
	// Shards are the target shards: one for Single and Default, two or
	// more (sorted) for Multi and All; nil for Refused, Hint, ShowRoute.
	Shards []string
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
	// Merge says how to combine the shards' results of a Multi or All
	// SELECT. Nil means concatenate (or a single target).
	Merge *merge.Spec
	// ShardSQL is the statement to send the shards when it differs from
	// the client's (a scatter SELECT rewritten for merging: avg as sum and
	// count, LIMIT n OFFSET m pushed down as LIMIT n+m, hidden sort or
	// group columns); "" means send the client's text.
	ShardSQL string
	// PerShardSQL is set for a multi-row INSERT whose rows go to several
	// shards: the INSERT each shard gets, holding only its rows (Multi).
	PerShardSQL map[string]string
	// PerShardRows gives, for each shard of PerShardSQL, the 0-based
	// positions in the client's VALUES list of the rows it got, in order
	// (to return INSERT ... RETURNING rows in the client's order).
	PerShardRows map[string][]int
	// Calls are the functions a Multi or All SELECT calls (target list,
	// ORDER BY, HAVING) that are not aggregates the planner knows; the
	// proxy refuses the statement when one is a user-defined aggregate.
	Calls []string
	// Broadcast marks an UPDATE or DELETE on a sharded table that has no
	// condition on the key: it runs on every shard. The proxy allows or
	// refuses it by configuration.
	Broadcast bool
	// Tx is the transaction operation of a StmtTx plan.
	Tx TxOp
	// Table is the first sharded table of the statement ("public.users"),
	// or "" when there is none.
	Table string
	// Copy describes a CopyIn.
	Copy *CopySpec
	// Hint is the SET/RESET of a routing hint for Kind SetHint.
	Hint *HintSet
	// Hinted is true when a hint (comment or session) decided the target.
	Hinted bool
	// Anywhere marks a Default plan for a statement that names no table
	// of the map and cannot write one (SELECT 1, SELECT now(), catalog
	// queries, NOTIFY; not a SELECT calling a function that may be the
	// user's own, one not on the built-in list nor qualified with
	// pg_catalog): it runs alike on every shard, so inside a transaction
	// it may run on the transaction's shard.
	Anywhere bool
	// Explain is true for EXPLAIN (pgshard) stmt: the plan is stmt's, to
	// be described to the client rather than run.
	Explain bool
	// Err says why, for Refused.
	Err *RefusalError
	// InTx marks a Refused DO or CALL that may still run on the shard of
	// the session's open transaction (the client chose that shard).
	InTx bool
	// NeedKeyPosition, on a Refused INSERT without a column list into a
	// sharded table, names the table ("public.users") whose key column
	// position (among its columns, from the catalog) would let the
	// planner route it: see Planner.SetKeyPosition. Shards[0] is a shard
	// holding the table.
	NeedKeyPosition string
	// NeedKeyColumn is that table's sharding key column.
	NeedKeyColumn string
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

// SQLSTATEs the planner uses.
const (
	SQLStateFeatureNotSupported = "0A000"
	SQLStateSyntaxError         = "42601"
	SQLStateInvalidParameter    = "22023"
)

// RefusalError is why a statement cannot run through the proxy. It is a
// PostgreSQL-style error the session sends to the client as is.
type RefusalError struct {
	Code    string // SQLSTATE, SQLStateFeatureNotSupported unless said otherwise
	Message string // what cannot be done and why
	Hint    string // what to do instead
}

// Error implements error.
func (e *RefusalError) Error() string {
	if e.Hint == "" {
		return e.Message
	}
	return e.Message + " (hint: " + e.Hint + ")"
}

func refusal(msg, hint string) *RefusalError {
	return &RefusalError{Code: SQLStateFeatureNotSupported, Message: msg, Hint: hint}
}
