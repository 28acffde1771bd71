package shardmaptest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

// Builder builds a shard map: shards first, then distributions over them,
// then tables in them. Its methods change the last shard, distribution or
// table added; mistakes (a bad address, a modifier with nothing to
// modify) fail the test at Map or YAML.
type Builder struct {
	m    shardmap.Map
	errs []error
}

// New starts a map at epoch 1 with nothing in it.
func New() *Builder { return &Builder{m: shardmap.Map{Epoch: 1}} }

func (b *Builder) fail(format string, args ...any) *Builder {
	b.errs = append(b.errs, fmt.Errorf(format, args...))
	return b
}

func (b *Builder) endpoints(what string, addrs []string) []shardmap.Endpoint {
	var out []shardmap.Endpoint
	for _, a := range addrs {
		e, err := shardmap.ParseEndpoint(a)
		if err != nil {
			b.fail("%s %q: %v", what, a, err)
			continue
		}
		out = append(out, e)
	}
	return out
}

func (b *Builder) lastShard(what string) *shardmap.Shard {
	if len(b.m.Shards) == 0 {
		b.fail("%s before any shard", what)
		return &shardmap.Shard{}
	}
	return &b.m.Shards[len(b.m.Shards)-1]
}

func (b *Builder) lastDistribution(what string) *shardmap.Distribution {
	if len(b.m.Distributions) == 0 {
		b.fail("%s before any distribution", what)
		return &shardmap.Distribution{}
	}
	return &b.m.Distributions[len(b.m.Distributions)-1]
}

// Epoch sets the map's epoch.
func (b *Builder) Epoch(e uint64) *Builder {
	b.m.Epoch = e
	return b
}

// Shard adds an active shard with its primary and replicas (host:port).
func (b *Builder) Shard(name, primary string, replicas ...string) *Builder {
	s := shardmap.Shard{Name: name, State: shardmap.StateActive}
	if p := b.endpoints("primary of "+name, []string{primary}); len(p) == 1 {
		s.Primary = p[0]
	}
	s.Replicas = b.endpoints("replica of "+name, replicas)
	b.m.Shards = append(b.m.Shards, s)
	return b
}

// ReadOnly makes the last shard read-only.
func (b *Builder) ReadOnly() *Builder {
	b.lastShard("ReadOnly").State = shardmap.StateReadOnly
	return b
}

// Fenced adds former primaries (host:port) to the last shard's fenced
// list.
func (b *Builder) Fenced(addrs ...string) *Builder {
	s := b.lastShard("Fenced")
	s.Fenced = append(s.Fenced, b.endpoints("fenced server of "+s.Name, addrs)...)
	return b
}

// Switch puts a switch in progress on the last shard, from its primary
// to to ("" while none is chosen), at step.
func (b *Builder) Switch(kind shardmap.SwitchKind, to, step, reason string) *Builder {
	s := b.lastShard("Switch")
	sw := &shardmap.Switch{Kind: kind, From: s.Primary, Step: step, Reason: reason}
	if to != "" {
		if e := b.endpoints("switch target of "+s.Name, []string{to}); len(e) == 1 {
			sw.To = e[0]
		}
	}
	s.Switch = sw
	return b
}

// Range adds a bigint range distribution over the first len(splits)+1
// shards: [-inf, splits[0]) on the first, [splits[0], splits[1]) on the
// second, ..., [splits[n-1], +inf) on the last. Its default shard is the
// first shard (see Default).
func (b *Builder) Range(name string, splits ...int64) *Builder {
	if len(b.m.Shards) < len(splits)+1 {
		return b.fail("range distribution %s has %d intervals but the map %d shards", name, len(splits)+1, len(b.m.Shards))
	}
	d := shardmap.Distribution{Name: name, KeyType: shardmap.KeyBigint, Strategy: shardmap.Range,
		DefaultShard: b.m.Shards[0].Name}
	lo := shardmap.NegInf()
	for i := range len(splits) + 1 {
		hi := shardmap.PosInf()
		if i < len(splits) {
			hi = shardmap.Int64Bound(splits[i])
		}
		d.Intervals = append(d.Intervals, shardmap.Interval{Lo: lo, Hi: hi, Shard: b.m.Shards[i].Name})
		lo = hi
	}
	b.m.Distributions = append(b.m.Distributions, d)
	return b
}

// Hash adds a bigint hash distribution that spreads the hash space evenly
// over shards (as the YAML's shards_even), or over all shards when none
// are named. Its default shard is the first of them (see Default).
func (b *Builder) Hash(name string, shards ...string) *Builder {
	if len(shards) == 0 {
		for _, s := range b.m.Shards {
			shards = append(shards, s.Name)
		}
	}
	if len(shards) == 0 {
		return b.fail("hash distribution %s over no shards", name)
	}
	b.m.Distributions = append(b.m.Distributions, shardmap.Distribution{Name: name, KeyType: shardmap.KeyBigint,
		Strategy: shardmap.Hash, Intervals: shardmap.EvenHashIntervals(shards), DefaultShard: shards[0]})
	return b
}

// Default sets the last distribution's default shard ("": none).
func (b *Builder) Default(shard string) *Builder {
	b.lastDistribution("Default").DefaultShard = shard
	return b
}

// Table adds a table (schema-qualified) sharded by key in the last
// distribution.
func (b *Builder) Table(name, key string) *Builder {
	d := b.lastDistribution("Table " + name)
	b.m.Tables = append(b.m.Tables, shardmap.Table{Name: name, Kind: shardmap.Sharded, KeyColumn: key, Distribution: d.Name})
	return b
}

// Unsharded adds a table (schema-qualified) that lives whole on the last
// distribution's default shard.
func (b *Builder) Unsharded(name string) *Builder {
	d := b.lastDistribution("Unsharded " + name)
	b.m.Tables = append(b.m.Tables, shardmap.Table{Name: name, Kind: shardmap.Unsharded, Distribution: d.Name})
	return b
}

// Build returns the map, or why it cannot be built or is not valid.
func (b *Builder) Build() (*shardmap.Map, error) {
	if err := errors.Join(b.errs...); err != nil {
		return nil, fmt.Errorf("shardmaptest: %w", err)
	}
	m := b.m.Clone()
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("shardmaptest: %w", err)
	}
	return m, nil
}

// Map returns the map (a copy: the builder can go on), failing the test
// when it cannot be built or is not valid.
func (b *Builder) Map(t testing.TB) *shardmap.Map {
	t.Helper()
	m, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// YAML returns the map's YAML, as ParseYAML reads it back.
func (b *Builder) YAML(t testing.TB) string {
	t.Helper()
	return YAML(t, b.Map(t))
}

// YAML returns m's YAML, failing the test when it cannot be written.
func YAML(t testing.TB, m *shardmap.Map) string {
	t.Helper()
	y, err := m.YAML()
	if err != nil {
		t.Fatal(err)
	}
	return string(y)
}
