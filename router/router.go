package router

// Kind says how many shards a plan targets.
type Kind uint8

// Plan kinds.
const (
	// KindSingle targets exactly one shard, named in Plan.Shard.
	KindSingle Kind = iota + 1
	// KindAny has no target of its own (transaction control, SET, SHOW):
	// it runs where the session already is, else on Plan.Shard.
	KindAny
)

// Plan is a routing decision for one statement.
type Plan struct {
	Kind  Kind
	Shard string // target shard for KindSingle
}

// Router decides the target of a statement. Implementations must be safe
// for concurrent use and cheap: the session loop calls Route each time it
// needs a backend.
type Router interface {
	// Route returns the plan for sql, the text of the first statement of a
	// transaction (empty when the client starts with a message that carries
	// no text, such as Sync). sql may alias a network buffer: Route must not
	// keep it (or a substring) after it returns.
	Route(sql string) (Plan, error)
}

// SingleShard routes every statement to one shard.
type SingleShard struct {
	Shard string
}

// Route implements Router.
func (s SingleShard) Route(string) (Plan, error) {
	return Plan{Kind: KindSingle, Shard: s.Shard}, nil
}
