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
	// Fenced are former primaries that get no traffic until re-joined.
	Fenced []string `json:"fenced"`
	// Switch is the failover or switchover in progress; absent when none.
	Switch *switchJSON `json:"switch,omitempty"`
}

// switchJSON is a change of a shard's primary in progress.
type switchJSON struct {
	Kind string `json:"kind"`
	From string `json:"from"`
	// To is "" until the replica that becomes the primary is chosen.
	To     string `json:"to,omitempty"`
	Step   string `json:"step,omitempty"`
	Reason string `json:"reason,omitempty"`
}

type distributionJSON struct {
	Name         string         `json:"name"`
	KeyType      string         `json:"key_type"`
	Strategy     string         `json:"strategy"`
	DefaultShard string         `json:"default_shard,omitempty"`
	Intervals    []intervalJSON `json:"intervals"`
	// Moving are the intervals a resharding cutover holds; absent when
	// none.
	Moving []movingJSON `json:"moving,omitempty"`
	// StaleRows are the intervals whose rows a shard holds without owning
	// them while a move runs; absent when none.
	StaleRows []staleJSON `json:"stale_rows,omitempty"`
}

type staleJSON struct {
	ID    string `json:"id"`
	Lo    string `json:"lo"`
	Hi    string `json:"hi"`
	Shard string `json:"shard"`
}

type movingJSON struct {
	ID   string `json:"id"`
	Lo   string `json:"lo"`
	Hi   string `json:"hi"`
	From string `json:"from"`
	To   string `json:"to"`
	Step string `json:"step"`
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
	out := shardJSON{
		Name: s.Name, Primary: s.Primary.String(), Replicas: endpointStrings(s.Replicas), State: string(s.State),
		Fenced: endpointStrings(s.Fenced),
	}
	if sw := s.Switch; sw != nil {
		out.Switch = &switchJSON{Kind: string(sw.Kind), From: sw.From.String(), Step: sw.Step, Reason: sw.Reason}
		if sw.To != (shardmap.Endpoint{}) {
			out.Switch.To = sw.To.String()
		}
	}
	return out
}

// describe says what the switch does, for people: "failover 10.0.0.1:5432
// -> 10.0.0.2:5432 at step promote"; "" for none.
func (sw *switchJSON) describe() string {
	if sw == nil {
		return ""
	}
	to := sw.To
	if to == "" {
		to = "(not chosen yet)"
	}
	s := sw.Kind + " " + sw.From + " -> " + to
	if sw.Step != "" {
		s += " at step " + sw.Step
	}
	return s
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
	for _, mv := range d.Moving {
		out.Moving = append(out.Moving, movingJSON{ID: mv.ID, Lo: mv.Lo.String(), Hi: mv.Hi.String(), From: mv.From, To: mv.To, Step: string(mv.Step)})
	}
	for _, st := range d.Stale {
		out.StaleRows = append(out.StaleRows, staleJSON{ID: st.ID, Lo: st.Lo.String(), Hi: st.Hi.String(), Shard: st.Shard})
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
