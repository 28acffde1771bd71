package pgshardtest

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/pgshard/pgshard/shardmap"
)

// mapShard is a shard's name and servers ("host:port"), as the map names
// them.
type mapShard struct {
	name     string
	primary  string
	replicas []string
}

// buildMap returns the shard map (epoch 1) of shards with c's
// distributions, or with c's ShardMap YAML.
func buildMap(c *config, shards []mapShard) (*shardmap.Map, error) {
	if c.mapYAML != "" {
		return mapFromYAML(c.mapYAML, shards)
	}
	m := &shardmap.Map{Epoch: 1}
	names := make([]string, len(shards))
	for i, s := range shards {
		names[i] = s.name
		sh := shardmap.Shard{Name: s.name, State: shardmap.StateActive}
		var err error
		if sh.Primary, err = shardmap.ParseEndpoint(s.primary); err != nil {
			return nil, fmt.Errorf("shard %s: %w", s.name, err)
		}
		for _, r := range s.replicas {
			e, err := shardmap.ParseEndpoint(r)
			if err != nil {
				return nil, fmt.Errorf("replica of shard %s: %w", s.name, err)
			}
			sh.Replicas = append(sh.Replicas, e)
		}
		m.Shards = append(m.Shards, sh)
	}
	for i, d := range c.distributions {
		md, err := distribution(d, names)
		if err != nil {
			return nil, fmt.Errorf("pgshardtest: distribution %d (%s): %w", i+1, distributionLabel(d), err)
		}
		m.Distributions = append(m.Distributions, md)
		for _, t := range d.Tables {
			if t.Key == "" {
				return nil, fmt.Errorf("pgshardtest: table %s has no key column", t.Name)
			}
			m.Tables = append(m.Tables, shardmap.Table{Name: qualify(t.Name), Kind: shardmap.Sharded,
				KeyColumn: strings.ToLower(t.Key), Distribution: md.Name})
		}
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("pgshardtest: shard map: %w", err)
	}
	return m, nil
}

// distributionLabel names d in errors.
func distributionLabel(d Distribution) string {
	if d.Name != "" {
		return d.Name
	}
	if len(d.Tables) > 0 {
		return "of " + d.Tables[0].Name
	}
	return "with no tables"
}

// distribution converts d to the map's form over the shards names.
func distribution(d Distribution, names []string) (shardmap.Distribution, error) {
	if len(d.Tables) == 0 {
		return shardmap.Distribution{}, errors.New("no tables")
	}
	md := shardmap.Distribution{Name: d.Name, KeyType: shardmap.KeyType(d.KeyType), DefaultShard: names[0]}
	if md.Name == "" {
		name := qualify(d.Tables[0].Name)
		md.Name = name[strings.IndexByte(name, '.')+1:]
	}
	if md.KeyType == "" {
		md.KeyType = shardmap.KeyBigint
	}
	if !md.KeyType.Known() {
		return md, fmt.Errorf("key type %q: want bigint, text or uuid", d.KeyType)
	}
	switch d.Strategy {
	case "", Hash:
		if len(d.Splits) > 0 {
			return md, errors.New("splits are for range distributions; a hash distribution spreads evenly")
		}
		md.Strategy = shardmap.Hash
		md.Intervals = shardmap.EvenHashIntervals(names)
	case Range:
		md.Strategy = shardmap.Range
		if len(d.Splits) != len(names)-1 {
			return md, fmt.Errorf("%d splits for %d shards: want one fewer than the shards", len(d.Splits), len(names))
		}
		lo := shardmap.NegInf()
		for i, name := range names {
			hi := shardmap.PosInf()
			if i < len(d.Splits) {
				b, err := bound(md.KeyType, d.Splits[i])
				if err != nil {
					return md, fmt.Errorf("split %q: %w", d.Splits[i], err)
				}
				hi = b
			}
			md.Intervals = append(md.Intervals, shardmap.Interval{Lo: lo, Hi: hi, Shard: name})
			lo = hi
		}
	default:
		return md, fmt.Errorf("strategy %q: want %q or %q", d.Strategy, Hash, Range)
	}
	return md, nil
}

// bound parses a split of key type t.
func bound(t shardmap.KeyType, s string) (shardmap.Bound, error) {
	switch t {
	case shardmap.KeyText:
		return shardmap.TextBound(s), nil
	case shardmap.KeyUUID:
		u, err := shardmap.ParseUUID(s)
		if err != nil {
			return shardmap.Bound{}, err
		}
		return shardmap.UUIDBound(u), nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return shardmap.Bound{}, fmt.Errorf("not a bigint: %w", err)
	}
	return shardmap.Int64Bound(v), nil
}

// qualify returns a table name in the map's form: lower-case,
// schema-qualified (public by default).
func qualify(name string) string {
	name = strings.ToLower(name)
	if !strings.Contains(name, ".") {
		name = "public." + name
	}
	return name
}

func formatInt(v int64) string { return strconv.FormatInt(v, 10) }

// mapFromYAML reads the distributions and tables of doc (a shard map
// without epoch and shards) and adds shards.
func mapFromYAML(doc string, shards []mapShard) (*shardmap.Map, error) {
	var top map[string]yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &top); err != nil {
		return nil, fmt.Errorf("pgshardtest: ShardMap: %w", err)
	}
	for _, k := range []string{"epoch", "shards"} {
		if _, ok := top[k]; ok {
			return nil, fmt.Errorf("pgshardtest: ShardMap: leave out %q: Start sets it (the shards are %s)", k, shardNames(shards))
		}
	}
	var b strings.Builder
	b.WriteString("epoch: 1\nshards:\n")
	for _, s := range shards {
		quoted := make([]string, len(s.replicas))
		for i, r := range s.replicas {
			quoted[i] = strconv.Quote(r)
		}
		fmt.Fprintf(&b, "  - {name: %s, primary: %q, replicas: [%s]}\n", s.name, s.primary, strings.Join(quoted, ", "))
	}
	b.WriteString(doc)
	m, err := shardmap.ParseYAML([]byte(b.String()))
	if err == nil {
		err = m.Validate()
	}
	if err != nil {
		return nil, fmt.Errorf("pgshardtest: ShardMap (with the shards %s added): %w", shardNames(shards), err)
	}
	return m, nil
}

func shardNames(shards []mapShard) string {
	names := make([]string, len(shards))
	for i, s := range shards {
		names[i] = s.name
	}
	return strings.Join(names, ", ")
}
