package main

import (
	"github.com/pgshard/pgshard/shardmap"
)

// The JSON form of a shard map for -o json. Interval bounds are strings
// written as in the map's YAML: -inf, +inf, a number, a quoted text
// ("\"m\""), or a uuid — so that a text bound "-inf" stays apart from -inf.

type mapJSON struct {
	Epoch         uint64             `json:"epoch"`
	Shards        []shardJSON        `json:"shards"`
	Distributions []distributionJSON `json:"distributions"`
	Tables        []tableJSON        `json:"tables"`
}

type shardJSON struct {
	Name     string   `json:"name"`
	Primary  string   `json:"primary"`
	Replicas []string `json:"replicas"`
	State    string   `json:"state"`
}

type distributionJSON struct {
	Name         string         `json:"name"`
	KeyType      string         `json:"key_type"`
	Strategy     string         `json:"strategy"`
	DefaultShard string         `json:"default_shard,omitempty"`
	Intervals    []intervalJSON `json:"intervals"`
}

type intervalJSON struct {
	Lo    string `json:"lo"`
	Hi    string `json:"hi"`
	Shard string `json:"shard"`
}

type tableJSON struct {
	Name         string `json:"name"`
	Kind         string `json:"kind"`
	Key          string `json:"key,omitempty"`
	Distribution string `json:"distribution"`
}

func mapToJSON(m *shardmap.Map) *mapJSON {
	if m == nil {
		return nil
	}
	out := &mapJSON{
		Epoch:         m.Epoch,
		Shards:        make([]shardJSON, 0, len(m.Shards)),
		Distributions: make([]distributionJSON, 0, len(m.Distributions)),
		Tables:        make([]tableJSON, 0, len(m.Tables)),
	}
	for i := range m.Shards {
		out.Shards = append(out.Shards, shardToJSON(&m.Shards[i]))
	}
	for i := range m.Distributions {
		out.Distributions = append(out.Distributions, distributionToJSON(&m.Distributions[i]))
	}
	for i := range m.Tables {
		out.Tables = append(out.Tables, tableToJSON(&m.Tables[i]))
	}
	return out
}

func shardToJSON(s *shardmap.Shard) shardJSON {
	return shardJSON{Name: s.Name, Primary: s.Primary.String(), Replicas: endpointStrings(s.Replicas), State: string(s.State)}
}

func distributionToJSON(d *shardmap.Distribution) distributionJSON {
	out := distributionJSON{
		Name:         d.Name,
		KeyType:      string(d.KeyType),
		Strategy:     string(d.Strategy),
		DefaultShard: d.DefaultShard,
		Intervals:    make([]intervalJSON, 0, len(d.Intervals)),
	}
	for _, iv := range d.Intervals {
		out.Intervals = append(out.Intervals, intervalJSON{Lo: iv.Lo.String(), Hi: iv.Hi.String(), Shard: iv.Shard})
	}
	return out
}

func tableToJSON(t *shardmap.Table) tableJSON {
	return tableJSON{Name: t.Name, Kind: string(t.Kind), Key: t.KeyColumn, Distribution: t.Distribution}
}

// endpointStrings formats endpoints as host:port (never nil, so that
// JSON has [] rather than null).
func endpointStrings(eps []shardmap.Endpoint) []string {
	out := make([]string, 0, len(eps))
	for _, e := range eps {
		out = append(out, e.String())
	}
	return out
}
