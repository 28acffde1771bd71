package main

import (
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/pgshard/pgshard/internal/controlplane"
	"github.com/pgshard/pgshard/replication/failover"
)

// The failover flags of `pgshard meta run`; internal/controlplane runs
// failover on the member.

// envMetaPGPassword holds the password of the role meta members use on
// PostgreSQL servers.
const envMetaPGPassword = "PGSHARD_META_PG_PASSWORD"

// metaFailoverOptions configures failover on a meta member.
type metaFailoverOptions struct {
	disabled      bool
	pgUser        string
	pgPasswordEnv string
	pgSSLMode     string
	pgSSLRootCert string
	checkInterval time.Duration
	failAfter     time.Duration
	observers     int
	drainGrace    time.Duration

	reshardDatabase string
	reshardCutover  time.Duration
	reshardMaxLag   int64
	reshardHoldRows int64
}

func (o *metaFailoverOptions) addFlags(f *pflag.FlagSet) {
	f.BoolVar(&o.disabled, "no-failover", false, "do not fail over dead primaries nor serve pgshard failover")
	f.StringVar(&o.pgUser, "pg-user", "postgres", "PostgreSQL role for health checks, promotion, repointing replicas and map apply's row counts (a superuser)")
	f.StringVar(&o.pgPasswordEnv, "pg-password-env", envMetaPGPassword, "environment variable holding that role's password")
	f.StringVar(&o.pgSSLMode, "pg-sslmode", "prefer", "libpq sslmode towards PostgreSQL servers")
	f.StringVar(&o.pgSSLRootCert, "pg-sslrootcert", "", "CA file for --pg-sslmode verify-ca/verify-full")
	f.DurationVar(&o.checkInterval, "failover-check-interval", failover.DefaultCheckInterval, "how often the leader checks every primary")
	f.DurationVar(&o.failAfter, "failover-after", failover.DefaultFailAfter, "how long a primary must fail every check before failover")
	f.IntVar(&o.observers, "failover-observers", failover.DefaultObservers, "proxies that must also report the primary unreachable (negative: the leader alone decides)")
	f.DurationVar(&o.drainGrace, "switchover-drain", failover.DefaultDrainGrace, "planned switchover: how long open transactions on the old primary may finish")
	f.StringVar(&o.reshardDatabase, "reshard-database", "postgres", "database holding the distributions' tables on every shard (resharding moves its rows)")
	f.DurationVar(&o.reshardCutover, "reshard-cutover-timeout", 30*time.Second, "resharding: how long a cutover may hold an interval before it aborts back to the source")
	f.Int64Var(&o.reshardMaxLag, "reshard-max-lag", 16<<20, "resharding: replication lag (bytes) above which a cutover does not start")
	f.Int64Var(&o.reshardHoldRows, "reshard-hold-verify-rows", 100_000, "resharding: an interval with more rows is compared in full before the cutover's hold and only counted inside it (the pause its clients see)")
}

// reshard is the member's resharding configuration.
func (o *metaFailoverOptions) reshard() *controlplane.ReshardConfig {
	return &controlplane.ReshardConfig{Database: o.reshardDatabase, CutoverTimeout: o.reshardCutover, MaxLagBytes: o.reshardMaxLag, HoldVerifyRows: o.reshardHoldRows}
}

// config is the member's failover configuration, nil with --no-failover.
// The password is read from the environment (flags never carry it).
func (o *metaFailoverOptions) config() *controlplane.FailoverConfig {
	if o.disabled {
		return nil
	}
	l := o.login()
	return &controlplane.FailoverConfig{
		PGUser: l.User, PGPassword: l.Password, PGSSLMode: l.SSLMode, PGSSLRootCert: l.SSLRootCert,
		CheckInterval: o.checkInterval, FailAfter: o.failAfter, Observers: o.observers, DrainGrace: o.drainGrace,
	}
}

// login is the member's PostgreSQL role, also with --no-failover (map
// apply's data check uses it). The password is read from the environment.
func (o *metaFailoverOptions) login() *controlplane.PGLogin {
	var password string
	if o.pgPasswordEnv != "" {
		password = os.Getenv(o.pgPasswordEnv)
	}
	return &controlplane.PGLogin{User: o.pgUser, Password: password, SSLMode: o.pgSSLMode, SSLRootCert: o.pgSSLRootCert}
}
