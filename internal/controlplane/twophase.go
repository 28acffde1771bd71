package controlplane

import (
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgshard/pgshard/replication/twophase"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/meta"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// Two-phase recovery on a meta member: the leader-side controller that
// resolves the prepared transactions of dead proxies (replication/twophase
// Recoverer), over the node's map and proxy leases, acting on the
// primaries as the member's PostgreSQL role; its last report is what
// ListTransactions serves.

// TwoPhaseConfig tunes two-phase recovery. Zero values take
// replication/twophase's defaults.
type TwoPhaseConfig struct {
	Interval      time.Duration // twophase.RecoveryConfig.Interval
	MaxAge        time.Duration // twophase.RecoveryConfig.MaxAge
	DecidedAge    time.Duration // twophase.RecoveryConfig.DecidedAge
	KeepDecisions time.Duration // twophase.RecoveryConfig.KeepDecisions
}

// nodeCluster is twophase.Cluster over a meta node.
type nodeCluster struct{ n *meta.Node }

func (c nodeCluster) Primaries() []twophase.Shard {
	hist := c.n.History(0) // newest first: the current map, then older ones
	if len(hist) == 0 || hist[0].Map == nil {
		return nil
	}
	m := hist[0].Map
	out := make([]twophase.Shard, 0, len(m.Shards))
	for _, s := range m.Shards {
		out = append(out, twophase.Shard{Name: s.Name, Addr: s.Primary.String(), PrimarySince: primarySince(hist, s.Name, s.Primary)})
	}
	return out
}

// primarySince is when primary became shard's primary: the time the
// oldest of the map versions since the last one where the shard had
// another primary (or was not in the map) was applied; zero when every
// version kept (hist, newest first) has it.
func primarySince(hist []meta.MapVersion, shard string, primary shardmap.Endpoint) time.Time {
	for i := 1; i < len(hist); i++ {
		m := hist[i].Map
		if m == nil {
			return hist[i-1].AppliedAt
		}
		s := m.Shard(shard)
		if s == nil || s.Primary != primary {
			return hist[i-1].AppliedAt
		}
	}
	return time.Time{}
}

func (c nodeCluster) LiveProxies() []twophase.LiveProxy {
	var out []twophase.LiveProxy
	for _, p := range c.n.Proxies() {
		if p.Alive {
			out = append(out, twophase.LiveProxy{ID: p.ID, Incarnation: p.Incarnation})
		}
	}
	return out
}

// newTwoPhase builds the recovery controller of the member whose node is
// node; its actions and rounds go to metrics, when not nil.
func newTwoPhase(node *meta.Node, login PGLogin, o TwoPhaseConfig, metrics *metrics, log *slog.Logger) (*twophase.Recoverer, error) {
	cfg := twophase.RecoveryConfig{
		Cluster: nodeCluster{node},
		Admin: twophase.NewPGAdmin(twophase.PGLogin{
			User: login.User, Password: login.Password, SSLMode: login.SSLMode, SSLRootCert: login.SSLRootCert,
		}),
		Interval: o.Interval, MaxAge: o.MaxAge, DecidedAge: o.DecidedAge, KeepDecisions: o.KeepDecisions,
		Logger: log.With("component", "twophase-recovery"),
	}
	warn := &twoPhaseWarnings{log: cfg.Logger}
	cfg.OnRound = warn.round
	if metrics != nil {
		var onRound func(twophase.Report)
		cfg.OnAction, onRound = metrics.twoPhase()
		cfg.OnRound = func(r twophase.Report) {
			warn.round(r)
			onRound(r)
		}
	}
	return twophase.NewRecoverer(cfg)
}

// twoPhaseController runs r as a leader-side controller.
func twoPhaseController(r *twophase.Recoverer) Controller {
	return ControllerFunc(r.Run)
}

// transactionsHook is the metarpc Transactions hook: r's last report.
func transactionsHook(r *twophase.Recoverer) func() (metarpc.TransactionsReport, bool) {
	return func() (metarpc.TransactionsReport, bool) {
		rep := r.Last()
		if rep.At.IsZero() {
			return metarpc.TransactionsReport{}, false
		}
		out := metarpc.TransactionsReport{ScannedAt: rep.At}
		for _, d := range rep.InDoubt {
			out.InDoubt = append(out.InDoubt, metarpc.InDoubtTransaction{
				GID: d.GID, Shard: d.Shard, Addr: d.Addr, Database: d.Database, Age: d.Age,
				Proxy: d.Proxy, ProxyAlive: d.ProxyAlive, State: d.State,
			})
		}
		for _, d := range rep.Decisions {
			out.Decisions = append(out.Decisions, metarpc.TransactionDecision{
				GID: d.GID, Shard: d.Shard, Database: d.Database, Committed: d.Committed, DecidedAt: d.At,
			})
		}
		for _, p := range rep.Problems {
			out.Problems = append(out.Problems, metarpc.TransactionProblem{Shard: p.Shard, Addr: p.Addr, Error: p.Error})
		}
		return out, true
	}
}

// twoPhase registers the two-phase recovery metrics and returns the
// recoverer's hooks.
func (m *metrics) twoPhase() (func(twophase.Action), func(twophase.Report)) {
	actions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgshard_twophase_recovery_actions_total",
		Help: "COMMIT PREPARED (action commit) and ROLLBACK PREPARED (rollback) that two-phase recovery ran as leader, by result (ok or error).",
	}, []string{"action", "result"})
	inDoubt := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pgshard_twophase_in_doubt",
		Help: "pgshard prepared transactions on the shard primaries at the leader's last recovery round (one per transaction, however many shards hold it).",
	})
	oldest := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pgshard_twophase_oldest_in_doubt_seconds",
		Help: "Age of the oldest pgshard prepared transaction left unresolved at the leader's last recovery round (0 when none): a prepared transaction holds its locks and blocks vacuum.",
	})
	problems := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pgshard_twophase_problem_shards",
		Help: "Shards where two-phase commit cannot work at the last recovery round: unreachable, or max_prepared_transactions = 0.",
	})
	m.reg.MustRegister(actions, inDoubt, oldest, problems)
	m.twoPhaseActions = actions
	onAction := func(a twophase.Action) {
		action, result := "rollback", "ok"
		if a.Commit {
			action = "commit"
		}
		if a.Err != nil {
			result = "error"
		}
		actions.WithLabelValues(action, result).Inc()
	}
	onRound := func(r twophase.Report) {
		gids := make(map[string]bool)
		var age time.Duration
		for _, d := range r.InDoubt {
			if d.State == "in progress" || strings.HasPrefix(d.State, "blocked") {
				gids[d.GID] = true
				age = max(age, d.Age)
			}
		}
		inDoubt.Set(float64(len(gids)))
		oldest.Set(age.Seconds())
		shards := make(map[string]bool)
		for _, p := range r.Problems {
			shards[p.Shard] = true
		}
		problems.Set(float64(len(shards)))
	}
	return onAction, onRound
}

// twoPhaseWarnings logs a round's problems (a shard with
// max_prepared_transactions = 0, say) when they change.
type twoPhaseWarnings struct {
	log  *slog.Logger
	last map[string]string
}

func (w *twoPhaseWarnings) round(r twophase.Report) {
	cur := make(map[string]string, len(r.Problems))
	for _, p := range r.Problems {
		cur[p.Shard+" "+p.Addr] = p.Error
		if w.last[p.Shard+" "+p.Addr] != p.Error {
			w.log.Warn("two-phase commit: shard problem", "shard", p.Shard, "addr", p.Addr, "problem", p.Error)
		}
	}
	w.last = cur
}
