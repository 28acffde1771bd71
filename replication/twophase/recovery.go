package twophase

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// Recovery: resolving prepared transactions that their coordinator left
// behind. It runs on the meta leader (internal/controlplane registers it)
// and sees the cluster through two small ports.

// Shard is a shard and its current primary.
type Shard struct{ Name, Addr string }

// Cluster is recovery's view of the cluster.
type Cluster interface {
	// Primaries are the shards of the current map and their primaries
	// (after a failover, the new one).
	Primaries() []Shard
	// LiveProxies are the IDs of the proxies whose lease runs.
	LiveProxies() []string
}

// PreparedXact is a pgshard prepared transaction on a server.
type PreparedXact struct {
	GID      string
	Database string
	// Age is how long ago it was prepared, by the server's clock.
	Age time.Duration
}

// ServerScan is what recovery reads from a primary in one round.
type ServerScan struct {
	// MaxPrepared is the server's max_prepared_transactions.
	MaxPrepared int
	// Xacts are its pgshard prepared transactions.
	Xacts []PreparedXact
	// Databases are the databases that accept connections (templates
	// excepted); NoTable those of them without the decision table.
	Databases, NoTable []string
}

// Decision is a commit or abort record on a decision shard.
type Decision struct {
	Shard     string    `json:"shard"`
	Database  string    `json:"database"`
	GID       string    `json:"gid"`
	Committed bool      `json:"committed"`
	At        time.Time `json:"decided_at"`
}

// Admin is how recovery acts on a server (see [NewPGAdmin]).
type Admin interface {
	Scan(ctx context.Context, addr string) (ServerScan, error)
	// EnsureSchema creates the decision table in db (SchemaSQL).
	EnsureSchema(ctx context.Context, addr, db string) error
	// Finish runs COMMIT PREPARED (commit) or ROLLBACK PREPARED gid in db;
	// a transaction no longer prepared is not an error.
	Finish(ctx context.Context, addr, db, gid string, commit bool) error
	// Decide runs DecisionSQL in db: the decision of a transaction no
	// longer prepared on its decision shard.
	Decide(ctx context.Context, addr, db, gid string) (committed bool, err error)
	// Lookup reads gid's record in db without writing one: found is
	// false when there is none (yet).
	Lookup(ctx context.Context, addr, db, gid string) (found, committed bool, err error)
	// Decisions lists db's newest records, at most limit, and deletes
	// those older than olderThan whose GID is not in keep (keep nil: none
	// deleted).
	Decisions(ctx context.Context, addr, db string, limit int, keep map[string]bool, olderThan time.Duration) ([]Decision, error)
}

// RecoveryConfig configures a Recoverer. Zero values take the defaults.
type RecoveryConfig struct {
	Cluster Cluster
	Admin   Admin
	// Interval between rounds (default 2 s).
	Interval time.Duration
	// MaxAge: a prepared transaction older than this is resolved even
	// while its proxy's lease runs (its coordinator gave up, or is
	// stuck). Default 30 s.
	MaxAge time.Duration
	// DecidedAge: a prepared transaction older than this whose decision
	// shard holds its commit record is committed even while its proxy's
	// lease runs (the coordinator lost a participant's connection after
	// the decision): committing a decided transaction is always safe.
	// Default 5 s.
	DecidedAge time.Duration
	// KeepDecisions is how long decision records are kept after no
	// participant is prepared any more (default 10 min).
	KeepDecisions time.Duration
	Logger        *slog.Logger
	// OnAction, when set, is called with every recovery action (metrics).
	OnAction func(Action)
	// OnRound, when set, is called with every round's report.
	OnRound func(Report)
}

// Action is one COMMIT PREPARED or ROLLBACK PREPARED recovery ran.
type Action struct {
	GID, Shard, Addr, Database string
	Commit                     bool
	Err                        error
}

// InDoubt is a prepared transaction as recovery last saw it.
type InDoubt struct {
	GID      string        `json:"gid"`
	Shard    string        `json:"shard"`
	Addr     string        `json:"addr"`
	Database string        `json:"database"`
	Age      time.Duration `json:"age_ns"`
	// Proxy is the coordinating proxy's tag; ProxyAlive whether its
	// lease runs.
	Proxy      string `json:"proxy"`
	ProxyAlive bool   `json:"proxy_alive"`
	// State: "in progress" (left to its coordinator), "commit" or
	// "rollback" (recovery resolved it this round), or "blocked: ..."
	// (recovery cannot resolve it now, and why).
	State string `json:"state"`
}

// Problem is a shard recovery could not scan, or whose server cannot run
// two-phase commit.
type Problem struct {
	Shard string `json:"shard"`
	Addr  string `json:"addr"`
	Error string `json:"error"`
}

// Report is what one round saw and did.
type Report struct {
	At        time.Time  `json:"at"`
	InDoubt   []InDoubt  `json:"in_doubt"`
	Decisions []Decision `json:"decisions"`
	Problems  []Problem  `json:"problems"`
}

// Recoverer resolves prepared transactions: every round it scans each
// shard's primary, and for each pgshard transaction whose proxy's lease
// has run out or that is older than MaxAge, resolves it from its
// decision (doc.go).
type Recoverer struct {
	cfg RecoveryConfig
	log *slog.Logger

	mu   sync.Mutex
	last Report
}

// recentDecisions bounds the decisions a report lists per database.
const recentDecisions = 50

// NewRecoverer returns a Recoverer; Run drives it.
func NewRecoverer(cfg RecoveryConfig) (*Recoverer, error) {
	if cfg.Cluster == nil || cfg.Admin == nil {
		return nil, errors.New("twophase: recovery needs a Cluster and an Admin")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 30 * time.Second
	}
	if cfg.DecidedAge <= 0 {
		cfg.DecidedAge = 5 * time.Second
	}
	if cfg.KeepDecisions <= 0 {
		cfg.KeepDecisions = 10 * time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Recoverer{cfg: cfg, log: log}, nil
}

// Run runs a round every Interval until ctx ends.
func (r *Recoverer) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, max(r.cfg.Interval*5, 10*time.Second))
		r.RunOnce(rctx)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Last returns the last round's report (zero before the first).
func (r *Recoverer) Last() Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// location is where a transaction is prepared.
type location struct {
	shard Shard
	db    string
	age   time.Duration
}

// RunOnce runs one round and returns its report.
func (r *Recoverer) RunOnce(ctx context.Context) Report {
	rep := Report{At: time.Now()}
	shards := r.cfg.Cluster.Primaries()
	alive := make(map[string]bool)
	for _, id := range r.cfg.Cluster.LiveProxies() {
		alive[ProxyTag(id)] = true
	}
	byTag := make(map[string]Shard, len(shards))
	for _, s := range shards {
		byTag[ShardTag(s.Name)] = s
	}

	scans := make(map[string]ServerScan, len(shards)) // by shard name, the shards scanned
	byGID := make(map[string][]location)
	for _, s := range shards {
		sc, err := r.cfg.Admin.Scan(ctx, s.Addr)
		if err != nil {
			rep.Problems = append(rep.Problems, Problem{Shard: s.Name, Addr: s.Addr, Error: err.Error()})
			continue
		}
		if sc.MaxPrepared == 0 {
			rep.Problems = append(rep.Problems, Problem{Shard: s.Name, Addr: s.Addr,
				Error: "max_prepared_transactions = 0: transactions that write on this shard and another cannot commit; set it (to max_connections, say) and restart the server"})
		}
		for _, db := range sc.NoTable {
			if err := r.cfg.Admin.EnsureSchema(ctx, s.Addr, db); err != nil {
				rep.Problems = append(rep.Problems, Problem{Shard: s.Name, Addr: s.Addr, Error: fmt.Sprintf("create %s in database %s: %v", DecisionTable, db, err)})
			}
		}
		scans[s.Name] = sc
		for _, x := range sc.Xacts {
			byGID[x.GID] = append(byGID[x.GID], location{shard: s, db: x.Database, age: x.Age})
		}
	}

	for _, gid := range slices.Sorted(maps.Keys(byGID)) {
		rep.InDoubt = append(rep.InDoubt, r.resolve(ctx, gid, byGID[gid], alive, byTag, scans)...)
	}

	// Decisions: list the recent ones and, when every shard was scanned,
	// delete the old ones no prepared transaction needs.
	var keep map[string]bool
	if len(scans) == len(shards) {
		keep = make(map[string]bool, len(byGID))
		for gid := range byGID {
			keep[gid] = true
		}
	}
	for _, s := range shards {
		sc, ok := scans[s.Name]
		if !ok {
			continue
		}
		for _, db := range sc.Databases {
			ds, err := r.cfg.Admin.Decisions(ctx, s.Addr, db, recentDecisions, keep, r.cfg.KeepDecisions)
			if err != nil {
				rep.Problems = append(rep.Problems, Problem{Shard: s.Name, Addr: s.Addr, Error: fmt.Sprintf("read decisions in database %s: %v", db, err)})
				continue
			}
			for i := range ds {
				ds[i].Shard = s.Name
			}
			rep.Decisions = append(rep.Decisions, ds...)
		}
	}
	slices.SortFunc(rep.Decisions, func(a, b Decision) int { return b.At.Compare(a.At) })

	r.mu.Lock()
	r.last = rep
	r.mu.Unlock()
	if r.cfg.OnRound != nil {
		r.cfg.OnRound(rep)
	}
	return rep
}

// resolve resolves gid, prepared at locs, if its time has come, and
// returns how it stands on each location.
func (r *Recoverer) resolve(ctx context.Context, gid string, locs []location, alive map[string]bool, byTag map[string]Shard, scans map[string]ServerScan) []InDoubt {
	var oldest time.Duration
	for _, l := range locs {
		oldest = max(oldest, l.age)
	}
	out := make([]InDoubt, len(locs))
	setState := func(state string) {
		for i := range out {
			out[i].State = state
		}
	}
	p, perr := ParseGID(gid)
	for i, l := range locs {
		out[i] = InDoubt{GID: gid, Shard: l.shard.Name, Addr: l.shard.Addr, Database: l.db, Age: l.age, Proxy: p.ProxyTag, ProxyAlive: alive[p.ProxyTag]}
	}
	if perr != nil {
		setState("blocked: " + perr.Error())
		return out
	}
	ds, ok := byTag[p.ShardTag]
	if alive[p.ProxyTag] && oldest < r.cfg.MaxAge {
		// The coordinator lives: only a decided commit is finished early.
		if !ok || oldest < r.cfg.DecidedAge || !r.committedEarly(ctx, gid, ds, locs, scans) {
			setState("in progress")
			return out
		}
	}
	if !ok {
		setState("blocked: its decision shard is not in the map")
		return out
	}
	if _, ok := scans[ds.Name]; !ok {
		setState("blocked: its decision shard " + ds.Name + " cannot be reached")
		return out
	}

	// The decision: still prepared on the decision shard means
	// undecided, and rolling that back decides the abort.
	commit := false
	decided := false
	for _, l := range locs {
		if l.shard.Name != ds.Name {
			continue
		}
		err := r.cfg.Admin.Finish(ctx, ds.Addr, l.db, gid, false)
		r.action(Action{GID: gid, Shard: ds.Name, Addr: ds.Addr, Database: l.db, Commit: false, Err: err})
		if err != nil {
			setState("blocked: roll back on the decision shard: " + err.Error())
			return out
		}
		decided = true
	}
	if !decided {
		var err error
		commit, err = r.cfg.Admin.Decide(ctx, ds.Addr, locs[0].db, gid)
		if err != nil {
			setState("blocked: read the decision on shard " + ds.Name + ": " + err.Error())
			return out
		}
	}
	for i, l := range locs {
		out[i].State = map[bool]string{true: "commit", false: "rollback"}[commit]
		if l.shard.Name == ds.Name {
			continue // rolled back above
		}
		err := r.cfg.Admin.Finish(ctx, l.shard.Addr, l.db, gid, commit)
		r.action(Action{GID: gid, Shard: l.shard.Name, Addr: l.shard.Addr, Database: l.db, Commit: commit, Err: err})
		if err != nil {
			out[i].State = "blocked: " + err.Error()
		}
	}
	return out
}

// committedEarly reports whether gid is no longer prepared on its
// decision shard ds and its commit record is there.
func (r *Recoverer) committedEarly(ctx context.Context, gid string, ds Shard, locs []location, scans map[string]ServerScan) bool {
	if _, ok := scans[ds.Name]; !ok {
		return false
	}
	for _, l := range locs {
		if l.shard.Name == ds.Name {
			return false // undecided
		}
	}
	found, committed, err := r.cfg.Admin.Lookup(ctx, ds.Addr, locs[0].db, gid)
	if err != nil {
		r.log.Warn("two-phase recovery: read a decision", "gid", gid, "shard", ds.Name, "err", err)
		return false
	}
	return found && committed
}

// action logs a and reports it.
func (r *Recoverer) action(a Action) {
	verb := map[bool]string{true: "COMMIT PREPARED", false: "ROLLBACK PREPARED"}[a.Commit]
	if a.Err != nil {
		r.log.Warn("two-phase recovery: action failed; next round retries", "action", verb, "gid", a.GID, "shard", a.Shard, "err", a.Err)
	} else {
		r.log.Info("two-phase recovery: resolved a prepared transaction", "action", verb, "gid", a.GID, "shard", a.Shard, "database", a.Database)
	}
	if r.cfg.OnAction != nil {
		r.cfg.OnAction(a)
	}
}
