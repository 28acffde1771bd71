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
type Shard struct {
	Name, Addr string
	// PrimarySince is when Addr became the shard's primary (the meta
	// leader's clock when the map that made it so was applied); zero when
	// not known. A transaction prepared before it was prepared on the
	// former primary: its coordinator's connection there is gone.
	PrimarySince time.Time
}

// Cluster is recovery's view of the cluster.
type Cluster interface {
	// Primaries are the shards of the current map and their primaries
	// (after a failover, the new one).
	Primaries() []Shard
	// LiveProxies are the proxies whose lease runs.
	LiveProxies() []LiveProxy
}

// LiveProxy is a proxy whose lease runs.
type LiveProxy struct {
	ID string
	// Incarnation is the one its last heartbeat carried ("" when it
	// sent none: then any of its GIDs counts as its own).
	Incarnation string
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
	// for a transaction no longer prepared it returns an error wrapping
	// ErrNotPrepared.
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

// ErrNotPrepared is wrapped by Admin.Finish's error when the transaction
// is not prepared (any more) on the server: someone finished it.
var ErrNotPrepared = errors.New("not prepared")

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
	alive := make(map[string]string) // proxy tag → incarnation
	for _, p := range r.cfg.Cluster.LiveProxies() {
		alive[ProxyTag(p.ID)] = p.Incarnation
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

	rd := &round{now: time.Now(), shards: shards, alive: alive, byTag: byTag, scans: scans}
	for _, gid := range slices.Sorted(maps.Keys(byGID)) {
		rep.InDoubt = append(rep.InDoubt, r.resolve(ctx, gid, byGID[gid], rd)...)
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

// round is what resolve needs of a round's scan.
type round struct {
	now    time.Time
	shards []Shard
	alive  map[string]string     // proxy tags whose lease runs → incarnation
	byTag  map[string]Shard      // shards by tag
	scans  map[string]ServerScan // by shard name, the shards scanned
}

// coordinatorAlive reports whether p's coordinator lives: its proxy's
// lease runs, in the incarnation of p (a proxy restarted under the same
// ID heartbeats with a new one: its predecessor is dead).
func (rd *round) coordinatorAlive(p ParsedGID) bool {
	inc, ok := rd.alive[p.ProxyTag]
	return ok && (inc == "" || inc == p.Incarnation)
}

// letGoAge is how old a live coordinator's transaction must be before
// recovery looks for a record saying its coordinator let go of it: a
// commit takes milliseconds, so younger ones are in progress.
const letGoAge = time.Second

// replaced reports whether a transaction prepared age ago on sh's
// current primary was prepared before that server became the primary
// (on the former one, replicated), or, for the decision shard, whether
// its primary changed since then.
func (rd *round) replaced(sh Shard, age time.Duration) bool {
	return !sh.PrimarySince.IsZero() && rd.now.Add(-age).Before(sh.PrimarySince)
}

// resolve resolves gid, prepared at locs, if its time has come (doc.go:
// the resolution rules), and returns how it stands on each location.
func (r *Recoverer) resolve(ctx context.Context, gid string, locs []location, rd *round) []InDoubt {
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
	alive := rd.coordinatorAlive(p)
	for i, l := range locs {
		out[i] = InDoubt{GID: gid, Shard: l.shard.Name, Addr: l.shard.Addr, Database: l.db, Age: l.age, Proxy: p.ProxyTag, ProxyAlive: alive}
	}
	if perr != nil {
		setState("blocked: " + perr.Error())
		return out
	}
	ds, ok := rd.byTag[p.ShardTag]
	if alive && oldest < r.cfg.MaxAge && !(ok && rd.replaced(ds, oldest)) {
		// The coordinator lives and still holds its connection to the
		// decision shard: resolved early only when it cannot decide
		// any more, or has decided.
		if !ok || !r.early(ctx, gid, ds, locs, oldest, rd) {
			setState("in progress")
			return out
		}
	}
	if !ok {
		setState("blocked: its decision shard is not in the map")
		return out
	}
	if _, ok := rd.scans[ds.Name]; !ok {
		setState("blocked: its decision shard " + ds.Name + " cannot be reached")
		return out
	}

	// The decision: still prepared on the decision shard means
	// undecided, and rolling that back decides the abort. Not prepared
	// there any more (its coordinator finished it meanwhile): the record
	// says.
	commit := false
	decided := false
	for _, l := range locs {
		if l.shard.Name != ds.Name {
			continue
		}
		err := r.cfg.Admin.Finish(ctx, ds.Addr, l.db, gid, false)
		if errors.Is(err, ErrNotPrepared) {
			break
		}
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
		if l.shard.Name == ds.Name && decided {
			continue // rolled back above
		}
		err := r.cfg.Admin.Finish(ctx, l.shard.Addr, l.db, gid, commit)
		if errors.Is(err, ErrNotPrepared) {
			continue
		}
		r.action(Action{GID: gid, Shard: l.shard.Name, Addr: l.shard.Addr, Database: l.db, Commit: commit, Err: err})
		if err != nil {
			out[i].State = "blocked: " + err.Error()
		}
	}
	return out
}

// early reports whether gid, whose coordinator lives and is younger than
// MaxAge, is to be resolved now (doc.go): its coordinator recorded that
// it let go of it, or the decision shard's record decides it and the
// coordinator would only finish it (after DecidedAge), or a participant
// was prepared on a primary replaced since (its coordinator lost that
// connection: it aborts, or leaves the commit to recovery).
func (r *Recoverer) early(ctx context.Context, gid string, ds Shard, locs []location, oldest time.Duration, rd *round) bool {
	if _, ok := rd.scans[ds.Name]; !ok {
		return false
	}
	failedOver := false
	dsPrepared := false
	for _, l := range locs {
		failedOver = failedOver || rd.replaced(l.shard, l.age)
		dsPrepared = dsPrepared || l.shard.Name == ds.Name
	}
	if dsPrepared {
		// Undecided. Its coordinator decides in milliseconds unless it
		// lost a participant (failedOver) or let go of it (a record on
		// another shard).
		switch {
		case oldest < letGoAge:
			return false
		case failedOver && oldest >= r.cfg.DecidedAge:
			return true
		}
		return r.letGo(ctx, gid, locs[0].db, rd)
	}
	found, committed, err := r.cfg.Admin.Lookup(ctx, ds.Addr, locs[0].db, gid)
	if err != nil {
		r.log.Warn("two-phase recovery: read a decision", "gid", gid, "shard", ds.Name, "err", err)
		return false
	}
	switch {
	case found && !committed:
		return true // aborted: by its coordinator, or by recovery
	case found:
		return oldest >= r.cfg.DecidedAge || failedOver || oldest >= letGoAge && r.letGo(ctx, gid, locs[0].db, rd)
	case failedOver:
		return true // no record: an abort is recorded first (Decide)
	}
	return oldest >= letGoAge && r.letGo(ctx, gid, locs[0].db, rd)
}

// letGo reports whether gid's coordinator recorded that it let go of
// the transaction: its let-go record (LetGoKey) on any shard.
func (r *Recoverer) letGo(ctx context.Context, gid, db string, rd *round) bool {
	for _, s := range rd.shards {
		if _, ok := rd.scans[s.Name]; !ok {
			continue
		}
		if found, _, err := r.cfg.Admin.Lookup(ctx, s.Addr, db, LetGoKey(gid)); err == nil && found {
			return true
		}
	}
	return false
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
