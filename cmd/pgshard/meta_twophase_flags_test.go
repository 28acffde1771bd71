package main

import (
	"errors"
	"testing"
	"time"
)

func TestMetaRunTwoPhaseFlags(t *testing.T) {
	cmd := newMetaRunCommand()
	if err := cmd.ParseFlags([]string{"--twophase-max-age", "12s", "--twophase-decided-age", "2s"}); err != nil {
		t.Fatal(err)
	}
	maxAge, _ := cmd.Flags().GetDuration("twophase-max-age")
	decided, _ := cmd.Flags().GetDuration("twophase-decided-age")
	o := &metaRunOptions{id: "m1", dataDir: "d", allowNoAuth: true, twoPhase: metaTwoPhaseOptions{maxAge: maxAge, decidedAge: decided}}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if c := o.twoPhase.config(); c.MaxAge != 12*time.Second || c.DecidedAge != 2*time.Second {
		t.Fatalf("config %+v", c)
	}

	// Defaults: replication/twophase's.
	def := newMetaRunCommand()
	if v, _ := def.Flags().GetDuration("twophase-max-age"); v != 30*time.Second {
		t.Errorf("default max age %s", v)
	}
	if v, _ := def.Flags().GetDuration("twophase-decided-age"); v != 5*time.Second {
		t.Errorf("default decided age %s", v)
	}

	for _, bad := range []metaTwoPhaseOptions{{maxAge: 0, decidedAge: time.Second}, {maxAge: time.Second, decidedAge: 2 * time.Second}} {
		o.twoPhase = bad
		var ue usageError
		if err := o.Validate(); !errors.As(err, &ue) {
			t.Errorf("%+v: err %v, want a usage error", bad, err)
		}
	}
}
