package main

import (
	"strings"
	"testing"
)

// ctlFencedMapYAML is ctlMapYAML after a failover of s1: 10.0.0.1 fenced.
const ctlFencedMapYAML = `epoch: 1
shards:
  - {name: s1, primary: "10.0.0.2:5432", fenced: ["10.0.0.1:5432"]}
  - {name: s2, primary: "10.0.0.3:5432", fenced: ["10.0.0.4:5432"], switch: {kind: failover, from: "10.0.0.3:5432", step: fence}}
distributions:
  - {name: users, key_type: bigint, strategy: range, default_shard: s1, intervals: [{lo: -inf, hi: 1000, shard: s1}, {lo: 1000, hi: +inf, shard: s2}]}
tables:
  - {name: public.users, distribution: users, key: id}
`

// TestRejoinRefusals: rejoin checks the map before it touches anything:
// the shard must exist, the endpoint must be fenced there, and the shard
// must not be switching; flags are validated.
func TestRejoinRefusals(t *testing.T) {
	c := startCtlMeta(t, ctlFencedMapYAML, ctlTokenOpts)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--shard", "s9", "--endpoint", "10.0.0.1:5432"}, exitError, "shard s9 is not in the map"},
		{[]string{"--shard", "s1", "--endpoint", "10.0.0.2:5432"}, exitError, "10.0.0.2:5432 is not fenced in shard s1"},
		{[]string{"--shard", "s2", "--endpoint", "10.0.0.4:5432"}, exitError, "shard s2 is switching its primary (failover)"},
		{[]string{"--endpoint", "10.0.0.1:5432"}, exitUsage, "--shard is required"},
		{[]string{"--shard", "s1", "--endpoint", "nope"}, exitUsage, "is not host:port"},
		{[]string{"--shard", "s1", "--endpoint", "10.0.0.1:5432", "--method", "magic"}, exitUsage, "--method \"magic\" is not auto, rewind or basebackup"},
	} {
		r := c.cli(t, append([]string{"shards", "rejoin"}, tc.args...)...).want(t, tc.code)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: stderr %q, want %q", tc.args, r.stderr, tc.want)
		}
	}
}
