package shardmap_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

func ep(s string) shardmap.Endpoint {
	e, err := shardmap.ParseEndpoint(s)
	if err != nil {
		panic(err)
	}
	return e
}

// afterFailover is validMap after a failover of s1: 10.0.0.2 is the
// primary, 10.0.0.1 is fenced.
func afterFailover() *shardmap.Map {
	m := validMap()
	m.Shards[0].Primary = ep("10.0.0.2:5432")
	m.Shards[0].Replicas = nil
	m.Shards[0].Fenced = []shardmap.Endpoint{ep("10.0.0.1:5432")}
	return m
}

func hazardList(hs []shardmap.Hazard) string {
	var b strings.Builder
	for _, h := range hs {
		fmt.Fprintf(&b, "%s %s %s\n", h.Kind, h.Shard, h.Server)
	}
	return b.String()
}

func TestCheckSuccessor(t *testing.T) {
	inRecovery := func(addrs ...string) func(string) bool {
		return func(a string) bool {
			for _, x := range addrs {
				if x == a {
					return true
				}
			}
			return false
		}
	}
	for _, c := range []struct {
		name       string
		cur        *shardmap.Map
		next       func() *shardmap.Map
		inRecovery func(string) bool
		want       string
	}{
		{"the same map", afterFailover(), afterFailover, nil, ""},
		{"no current map", nil, validMap, nil, ""},
		// The original map again after the failover: the fenced old
		// primary becomes primary and its fence is gone (reported once,
		// as a fenced primary); the new primary, a replica again, is in
		// recovery for the health view.
		{"stale map", afterFailover(), validMap, inRecovery("10.0.0.2:5432"),
			"fenced-primary s1 10.0.0.1:5432\n"},
		{"fenced server made primary of another shard", afterFailover(), func() *shardmap.Map {
			m := afterFailover()
			m.Shards[0].Fenced = nil
			m.Shards[1].Primary = ep("10.0.0.1:5432")
			return m
		}, nil, "fenced-primary s2 10.0.0.1:5432\ndropped-fence s1 10.0.0.1:5432\n"},
		{"fence dropped", afterFailover(), func() *shardmap.Map {
			m := afterFailover()
			m.Shards[0].Fenced = nil
			return m
		}, nil, "dropped-fence s1 10.0.0.1:5432\n"},
		{"fence moved to the replicas of another shard", afterFailover(), func() *shardmap.Map {
			m := afterFailover()
			m.Shards[0].Fenced = nil
			m.Shards[1].Replicas = []shardmap.Endpoint{ep("10.0.0.1:5432")}
			return m
		}, nil, "dropped-fence s1 10.0.0.1:5432\n"},
		{"rejoin: fence moved to the replicas", afterFailover(), func() *shardmap.Map {
			m := afterFailover()
			m.Shards[0].Fenced = nil
			m.Shards[0].Replicas = []shardmap.Endpoint{ep("10.0.0.1:5432")}
			return m
		}, nil, ""},
		{"fence moved to another shard's fenced list", afterFailover(), func() *shardmap.Map {
			m := afterFailover()
			m.Shards[0].Fenced = nil
			m.Shards[1].Fenced = []shardmap.Endpoint{ep("10.0.0.1:5432")}
			return m
		}, nil, ""},
		{"primary changed to a server in recovery", validMap(), func() *shardmap.Map {
			m := validMap()
			m.Shards[0].Primary, m.Shards[0].Replicas = ep("10.0.0.2:5432"), []shardmap.Endpoint{ep("10.0.0.1:5432")}
			return m
		}, inRecovery("10.0.0.2:5432"), "primary-in-recovery s1 10.0.0.2:5432\n"},
		{"unchanged primary in recovery is not this change's doing", validMap(), validMap, inRecovery("10.0.0.1:5432"), ""},
		{"new shard whose primary is in recovery", validMap(), func() *shardmap.Map {
			m := validMap()
			m.Shards = append(m.Shards, shardmap.Shard{Name: "s3", Primary: ep("10.0.0.7:5432"), State: shardmap.StateActive})
			return m
		}, inRecovery("10.0.0.7:5432"), "primary-in-recovery s3 10.0.0.7:5432\n"},
		{"unknown health does not refuse", validMap(), func() *shardmap.Map {
			m := validMap()
			m.Shards[0].Primary, m.Shards[0].Replicas = ep("10.0.0.2:5432"), []shardmap.Endpoint{ep("10.0.0.1:5432")}
			return m
		}, nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := hazardList(shardmap.CheckSuccessor(c.cur, c.next(), c.inRecovery))
			if got != c.want {
				t.Errorf("hazards:\n%s\nwant:\n%s", got, c.want)
			}
		})
	}
}

func TestHazardMessageNamesShardServerAndWhy(t *testing.T) {
	hs := shardmap.CheckSuccessor(afterFailover(), validMap(), nil)
	if len(hs) != 1 {
		t.Fatalf("hazards: %v", hs)
	}
	msg := hs[0].String()
	for _, want := range []string{"shard s1", "10.0.0.1:5432", "fenced in the current map", "shards rejoin"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}
