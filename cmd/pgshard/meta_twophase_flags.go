package main

import (
	"errors"
	"time"

	"github.com/spf13/pflag"

	"github.com/pgshard/pgshard/internal/controlplane"
)

// The two-phase recovery flags of `pgshard meta run`; internal/controlplane
// runs the recovery on the leader (replication/twophase.Recoverer).

// metaTwoPhaseOptions tunes two-phase recovery on a meta member.
type metaTwoPhaseOptions struct {
	maxAge     time.Duration
	decidedAge time.Duration
}

func (o *metaTwoPhaseOptions) addFlags(f *pflag.FlagSet) {
	f.DurationVar(&o.maxAge, "twophase-max-age", 30*time.Second, "two-phase recovery: a prepared transaction older than this is resolved even while its proxy lives (the longest a transaction its live coordinator lost can hold its locks)")
	f.DurationVar(&o.decidedAge, "twophase-decided-age", 5*time.Second, "two-phase recovery: a prepared transaction older than this whose commit is recorded is committed even while its proxy lives")
}

// validate checks the ages.
func (o *metaTwoPhaseOptions) validate() error {
	switch {
	case o.maxAge <= 0 || o.decidedAge <= 0:
		return usageError{errors.New("--twophase-max-age and --twophase-decided-age must be positive")}
	case o.decidedAge > o.maxAge:
		return usageError{errors.New("--twophase-decided-age must not exceed --twophase-max-age")}
	}
	return nil
}

// config is the member's two-phase recovery configuration.
func (o *metaTwoPhaseOptions) config() controlplane.TwoPhaseConfig {
	return controlplane.TwoPhaseConfig{MaxAge: o.maxAge, DecidedAge: o.decidedAge}
}
