package shardmap

import (
	"math"
	"math/bits"
	"net"
	"slices"
	"strconv"
	"time"
)

// KeyType is the SQL type of a distribution's key column.
type KeyType string

// The key types a distribution can have.
const (
	KeyBigint KeyType = "bigint" // int8; int2 and int4 columns widen to it
	KeyText   KeyType = "text"   // text or varchar, compared and hashed as COLLATE "C"
	KeyUUID   KeyType = "uuid"
)

// Known reports whether t is one of the key types above.
func (t KeyType) Known() bool { return t == KeyBigint || t == KeyText || t == KeyUUID }

// HashSQL returns the SQL expression that computes, on a PostgreSQL
// server, the hash pgshard gives the value of expr (a column name or any
// expression of this key type), e.g. for bigint
// "hashint8extended((id)::int8, 8099569346997806113)". Resharding uses it
// in publication row filters and verification queries. It returns "" for
// an unknown key type.
func (t KeyType) HashSQL(expr string) string {
	seed := strconv.FormatInt(Seed, 10)
	switch t {
	case KeyBigint:
		return "hashint8extended((" + expr + ")::int8, " + seed + ")"
	case KeyText:
		return "hashtextextended((" + expr + `)::text COLLATE "C", ` + seed + ")"
	case KeyUUID:
		return "uuid_hash_extended((" + expr + ")::uuid, " + seed + ")"
	}
	return ""
}

// Strategy says how a distribution places keys on its intervals.
type Strategy string

// The strategies.
const (
	// Range intervals are over the key values themselves.
	Range Strategy = "range"
	// Hash intervals are over the signed 64-bit hash of the key
	// (HashInt64, HashText, HashUUID), from -inf to +inf.
	Hash Strategy = "hash"
)

// Known reports whether s is one of the strategies above.
func (s Strategy) Known() bool { return s == Range || s == Hash }

// Interval is the half-open range [Lo, Hi) of a distribution's key space
// (or hash space) that lives on one shard: a key equal to Lo belongs to
// it, a key equal to Hi to the next interval.
type Interval struct {
	Lo, Hi Bound
	Shard  string // name of a Shard of the map
}

// Distribution is a way to spread rows over shards: a key type, a strategy
// and ordered intervals that together cover the whole key space (for
// Range) or the whole int64 hash space (for Hash), each owned by a shard.
// Tables sharing a distribution are colocated: rows with equal keys are on
// the same shard, so joins on the key stay on one shard.
type Distribution struct {
	Name     string
	KeyType  KeyType
	Strategy Strategy
	// Intervals are sorted by Lo, contiguous and cover everything from
	// -inf to +inf; Validate checks it and lookups rely on it.
	Intervals []Interval
	// DefaultShard is where the distribution's unsharded tables live.
	// Required when an unsharded table uses the distribution; "" otherwise
	// means none. It is not derived from the intervals on purpose, so that
	// splitting or moving an interval never moves an unsharded table.
	DefaultShard string
	// Moving are the key intervals of the distribution whose cutover to
	// another shard is in progress (see [Moving]), at most one per key:
	// they never overlap. Empty when no cutover runs.
	Moving []Moving
	// Stale are the key intervals whose rows a shard holds without owning
	// them while a move runs (see [StaleRows]); reads and keyless writes
	// on that shard leave them out. Empty when no move runs.
	Stale []StaleRows
}

// MoveStep is the step of a [Moving] marker.
type MoveStep string

// The steps of a moving interval.
const (
	// MoveHold: proxies hold the statements for the interval's keys.
	MoveHold MoveStep = "hold"
)

// Known reports whether s is one of the steps above.
func (s MoveStep) Known() bool { return s == MoveHold }

// Moving marks a key interval [Lo, Hi) of a distribution (of hash values
// for a hash distribution, as in [Interval]) whose owner is being changed
// from shard From to shard To by the resharding workflow
// (replication/reshard), so that every proxy learns it from the map as it
// learns a [Switch]. Only that workflow adds and removes it; a map change
// made by hand that adds, drops or changes one is a [Hazard].
//
// The marker's life, in epochs: the workflow commits an epoch that adds
// the marker with Step [MoveHold] while the interval still belongs to From
// (the interval [Lo, Hi) lies inside one interval of the distribution,
// owned by From), waits until every live proxy has acknowledged that
// epoch, fences the interval on From (writes to its rows fail there with
// SQLSTATE PS001, interval fenced), lets To catch up, and commits the
// epoch that releases it: the same map without the marker, with [Lo, Hi)
// owned by To (the cutover), or still by From (an aborted cutover, or
// the hold of a rollback whose release gives the interval back to To's
// former owner: then From and To are swapped, From being the owner
// during the hold).
//
// What a proxy does while a map has a marker with Step MoveHold:
//   - A statement that would start on a backend of From for a key in
//     [Lo, Hi) of this distribution (autocommit, or the first statement
//     of a transaction, which names its target) is held, not sent: it
//     waits, as statements wait for a shard with a [Switch], until a map
//     without the marker arrives, and is then routed by that map (to To
//     after a cutover, to From after an abort). One held longer than the
//     proxy's buffering window fails with a retryable error.
//   - Inside a transaction already open on From, a statement for the
//     interval is sent to From as usual (reads see the interval's rows
//     there; a write after the fence fails with SQLSTATE PS001, interval
//     fenced, which aborts the transaction: the client retries it).
//   - Statements for other keys, other intervals and other distributions
//     of From and To flow as usual: the hold is for the interval only.
//     Reads without a key (scatter) still go to From, which keeps the
//     interval's rows until cleanup; writes without a key that would
//     reach the table's rows on From (a scatter UPDATE or DELETE on a
//     table of the distribution) are held like keyed ones.
//   - A statement that fails with PS001 outside a transaction (it reached
//     From with an older map) is retried by the proxy once it has a map
//     without the marker; no other statement is retried.
//
// A proxy reports the epoch with the marker as applied (its heartbeat)
// only once every new statement for the interval is held; statements
// already sent may finish on From (they reach To through the replication
// before the cutover, or fail on the fence). The workflow fences From only
// after every live proxy reported it, or its lease ran out.
type Moving struct {
	// ID is the workflow's move id (reshard status names it).
	ID string
	// Lo and Hi are the interval [Lo, Hi), of the distribution's bound
	// type.
	Lo, Hi Bound
	// From is the owner of the interval while the marker is set; To the
	// shard the workflow moves it to.
	From, To string
	// Step is what proxies do with the interval: MoveHold.
	Step MoveStep
}

// StaleRows marks the rows of a key interval [Lo, Hi) of a distribution
// (of hash values for a hash distribution, as in [Interval]) that shard
// Shard holds although another shard owns the interval: the copy a move
// makes on its target before the cutover (and after a rollback until its
// rows are deleted), and the rows the source keeps after the cutover
// until `reshard cleanup`. A statement without a key (a scatter read, a
// COPY TO, an UPDATE or DELETE without a key condition) that reaches
// Shard runs there with these rows left out (router/plan), so that every
// row is read or changed once, on its owner. Keyed statements never reach
// them: their keys are owned by the shard they go to.
//
// Only the resharding workflow (replication/reshard) adds, moves and
// drops it; a map change made by hand that adds, drops or changes one is
// a [Hazard]. Its life, in epochs, for a move of [Lo, Hi) from shard F to
// shard T: an epoch with the marker on T is committed, and acknowledged
// by every live proxy, before the replication starts copying rows to T;
// the epoch of the cutover gives [Lo, Hi) to T and the marker to F (one
// epoch, so that no map counts the rows twice or not at all); a rollback's
// release gives both back (owner F, marker on T); the marker is dropped
// once cleanup (or cancel, or the rollback) has deleted the rows it
// covers. Validate checks that Shard owns no key of [Lo, Hi).
type StaleRows struct {
	// ID is the workflow's move id; a distribution has at most one marker
	// per move.
	ID string
	// Lo and Hi are the interval [Lo, Hi), of the distribution's bound
	// type.
	Lo, Hi Bound
	// Shard holds rows of [Lo, Hi) without owning any key of it.
	Shard string
}

// Contains reports whether bound value b lies in [Lo, Hi).
func (s *StaleRows) Contains(b Bound) bool {
	return s.Lo.Compare(b) <= 0 && b.Compare(s.Hi) < 0
}

// Contains reports whether bound value b (a key value for a range
// distribution, a key's hash for a hash one) lies in [Lo, Hi).
func (mv *Moving) Contains(b Bound) bool {
	return mv.Lo.Compare(b) <= 0 && b.Compare(mv.Hi) < 0
}

// boundType is the type of the distribution's interval bounds: the key
// type for Range, bigint (the int64 hash) for Hash.
func (d *Distribution) boundType() KeyType {
	if d.Strategy == Hash {
		return KeyBigint
	}
	return d.KeyType
}

// EvenHashIntervals splits the int64 hash space into len(shards) intervals
// of equal width (to within one), the i-th owned by shards[i]:
// [-inf, b1), [b1, b2), ..., [bn-1, +inf). It is what the YAML shorthand
// shards_even generates. It returns nil for no shards.
func EvenHashIntervals(shards []string) []Interval {
	n := uint64(len(shards))
	if n == 0 {
		return nil
	}
	out := make([]Interval, len(shards))
	lo := NegInf()
	for i, s := range shards {
		hi := PosInf()
		if uint64(i+1) < n {
			// floor((i+1) * 2^64 / n), shifted to the signed space.
			q, _ := bits.Div64(uint64(i+1), 0, n)
			hi = Int64Bound(int64(q + 1<<63))
		}
		out[i] = Interval{Lo: lo, Hi: hi, Shard: s}
		lo = hi
	}
	return out
}

// TableKind says whether a table is split over shards.
type TableKind string

// The table kinds.
const (
	// Sharded tables are split by the value of their key column.
	Sharded TableKind = "sharded"
	// Unsharded tables live whole on their distribution's default shard.
	Unsharded TableKind = "unsharded"
)

// Table is a table the proxy routes.
type Table struct {
	// Name is schema-qualified and lower-case, as PostgreSQL folds
	// unquoted identifiers: "public.users".
	Name      string
	Kind      TableKind
	KeyColumn string // the sharding key of a Sharded table; "" for Unsharded
	// Distribution names the table's distribution: its key space for a
	// Sharded table, its default shard for an Unsharded one.
	Distribution string
	// Cache says whether the proxies cache point reads of the table by
	// its key (a Sharded table only); the zero value means not cached.
	Cache TableCache
}

// TableCache is a table's hot-row cache settings (YAML "cache:").
type TableCache struct {
	// Enabled marks the table cacheable.
	Enabled bool
	// TTL bounds an entry's life as a backstop (0: the proxy's default).
	TTL time.Duration
	// MaxEntryBytes is the largest result cached (0: the proxy's default).
	MaxEntryBytes int
}

// String describes c for diffs: "off", or "on" with its settings.
func (c TableCache) String() string {
	if !c.Enabled && c.TTL == 0 && c.MaxEntryBytes == 0 {
		return "off"
	}
	s := "off"
	if c.Enabled {
		s = "on"
	}
	if c.TTL != 0 {
		s += " ttl=" + c.TTL.String()
	}
	if c.MaxEntryBytes != 0 {
		s += " max_entry_bytes=" + strconv.Itoa(c.MaxEntryBytes)
	}
	return s
}

// ShardState is what a shard is doing.
type ShardState string

// The shard states.
const (
	// StateActive shards serve reads and writes.
	StateActive ShardState = "active"
	// StateReadOnly shards serve reads; writes to them are refused, e.g.
	// while their last interval is moved away.
	StateReadOnly ShardState = "readonly"
	// StateOffline shards get no traffic, e.g. while being built.
	StateOffline ShardState = "offline"
)

// Known reports whether s is one of the states above.
func (s ShardState) Known() bool {
	return s == StateActive || s == StateReadOnly || s == StateOffline
}

// Endpoint is the address of a PostgreSQL server.
type Endpoint struct {
	Host string
	Port int
}

// String formats e as host:port, with brackets around an IPv6 host.
func (e Endpoint) String() string { return net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) }

// ParseEndpoint parses host:port ([host]:port for IPv6).
func ParseEndpoint(s string) (Endpoint, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Endpoint{}, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > math.MaxUint16 {
		return Endpoint{}, &net.AddrError{Err: "port must be a number from 1 to 65535", Addr: s}
	}
	return Endpoint{Host: host, Port: p}, nil
}

// Shard is one PostgreSQL primary with its streaming replicas.
type Shard struct {
	Name     string
	Primary  Endpoint
	Replicas []Endpoint
	State    ShardState
	// Fenced are former primaries replaced by a failover or switchover.
	// Proxies never send them anything; a DBA takes one out of the list
	// by re-joining it as a replica (pgshard shards rejoin).
	Fenced []Endpoint
	// Switch is the failover or switchover in progress, nil when none.
	// While it is set, proxies hold the shard's writes (and its reads
	// that need the primary) until a map without it arrives.
	Switch *Switch
}

// SwitchKind says why a shard changes its primary.
type SwitchKind string

// The switch kinds.
const (
	// Failover replaces a primary that failed its health checks.
	Failover SwitchKind = "failover"
	// Switchover is a planned change of primary, asked for by a DBA; it
	// waits for the new primary to replay everything and loses nothing.
	Switchover SwitchKind = "switchover"
)

// Known reports whether k is one of the kinds above.
func (k SwitchKind) Known() bool { return k == Failover || k == Switchover }

// Switch is the replicated state of a change of a shard's primary. It is
// kept in the map, so that every proxy sees that the shard is switching
// and a new meta leader resumes the workflow where the old one stopped.
type Switch struct {
	Kind SwitchKind
	// From is the primary being replaced: the shard's Primary while the
	// switch runs.
	From Endpoint
	// To is the replica chosen to become the primary; zero until chosen.
	To Endpoint
	// Step is the last step the workflow committed (its own vocabulary,
	// see package replication/failover).
	Step string
	// Reason says why the switch started, for people.
	Reason string
}

// Map is the whole shard map: which shards exist, how keys are
// distributed over them and which tables use which distribution.
//
// A Map is a value to be built, validated and then shared read-only: a
// change is a new Map (see Clone) with a higher Epoch.
type Map struct {
	// Epoch grows with every change to the map, from 1. Proxies report
	// the epoch they apply.
	Epoch         uint64
	Shards        []Shard
	Distributions []Distribution
	Tables        []Table
}

// Shard returns the shard called name, or nil.
func (m *Map) Shard(name string) *Shard {
	for i := range m.Shards {
		if m.Shards[i].Name == name {
			return &m.Shards[i]
		}
	}
	return nil
}

// Distribution returns the distribution called name, or nil.
func (m *Map) Distribution(name string) *Distribution {
	for i := range m.Distributions {
		if m.Distributions[i].Name == name {
			return &m.Distributions[i]
		}
	}
	return nil
}

// Table returns the table called name (schema-qualified, lower-case), or
// nil. It scans the tables; a router resolving many statements should
// index them once per map.
func (m *Map) Table(name string) *Table {
	for i := range m.Tables {
		if m.Tables[i].Name == name {
			return &m.Tables[i]
		}
	}
	return nil
}

// Clone returns a deep copy of m, to change into the next epoch's map
// without touching m, which readers may be using.
func (m *Map) Clone() *Map {
	c := &Map{Epoch: m.Epoch, Tables: slices.Clone(m.Tables)}
	if m.Shards != nil {
		c.Shards = make([]Shard, len(m.Shards))
		for i, s := range m.Shards {
			s.Replicas = slices.Clone(s.Replicas)
			s.Fenced = slices.Clone(s.Fenced)
			if s.Switch != nil {
				sw := *s.Switch
				s.Switch = &sw
			}
			c.Shards[i] = s
		}
	}
	if m.Distributions != nil {
		c.Distributions = make([]Distribution, len(m.Distributions))
		for i, d := range m.Distributions {
			d.Intervals = slices.Clone(d.Intervals)
			d.Moving = slices.Clone(d.Moving)
			d.Stale = slices.Clone(d.Stale)
			c.Distributions[i] = d
		}
	}
	return c
}
