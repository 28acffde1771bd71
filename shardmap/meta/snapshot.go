package meta

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/pgshard/pgshard/shardmap"
)

// Snapshot formats. Restore reads every format up to the newest and
// refuses newer ones, leaving the state as it was. A state that has never
// had a workflow record is written in format 1, byte for byte as before
// records existed, so that such a snapshot stays readable by a binary
// that predates them; format 2 adds the workflow section.
const (
	snapshotFormat          = 1 // written when the state has no workflow section
	snapshotFormatWorkflows = 2 // written when it has one
)

// snapshotFile is the JSON layout of a snapshot. Lists are in a fixed order
// (maps oldest first, proxies, members and workflows by ID), so that equal
// states write equal bytes.
type snapshotFile struct {
	Format  int              `json:"format"`
	Now     time.Time        `json:"now"`
	Maps    []snapshotMap    `json:"maps"`
	Proxies []snapshotProxy  `json:"proxies"`
	Members []snapshotMember `json:"members"`
	// Format 2.
	WorkflowSeq uint64             `json:"workflow_seq,omitempty"`
	Workflows   []snapshotWorkflow `json:"workflows,omitempty"`
}

type snapshotMap struct {
	Epoch     uint64    `json:"epoch"`
	AppliedAt time.Time `json:"applied_at"`
	YAML      string    `json:"yaml"`
	Comment   string    `json:"comment,omitempty"`
	Author    string    `json:"author,omitempty"`
}

type snapshotProxy struct {
	ID           string    `json:"id"`
	Addr         string    `json:"addr"`
	AppliedEpoch uint64    `json:"applied_epoch"`
	LastSeen     time.Time `json:"last_seen"`
	LeaseNanos   int64     `json:"lease_ns"`
	Incarnation  string    `json:"incarnation,omitempty"`
}

type snapshotMember struct {
	ID      string `json:"id"`
	APIAddr string `json:"api_addr"`
}

type snapshotWorkflow struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	Version   uint64    `json:"version"`
	State     []byte    `json:"state,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// writeSnapshot writes s to w.
func writeSnapshot(w io.Writer, s *state) error {
	f := snapshotFile{Format: snapshotFormat, Now: s.now,
		Maps: []snapshotMap{}, Proxies: []snapshotProxy{}, Members: []snapshotMember{}}
	for _, v := range s.versions {
		f.Maps = append(f.Maps, snapshotMap{Epoch: v.Epoch, AppliedAt: v.AppliedAt, YAML: string(v.YAML), Comment: v.Comment, Author: v.Author})
	}
	for _, id := range slices.Sorted(maps.Keys(s.proxies)) {
		r := s.proxies[id]
		f.Proxies = append(f.Proxies, snapshotProxy{ID: id, Addr: r.addr, AppliedEpoch: r.applied, LastSeen: r.lastSeen, LeaseNanos: int64(r.lease), Incarnation: r.incarnation})
	}
	for _, id := range slices.Sorted(maps.Keys(s.apiAddrs)) {
		f.Members = append(f.Members, snapshotMember{ID: id, APIAddr: s.apiAddrs[id]})
	}
	if s.workflowSeq != 0 {
		f.Format, f.WorkflowSeq = snapshotFormatWorkflows, s.workflowSeq
		for _, id := range slices.Sorted(maps.Keys(s.workflows)) {
			r := s.workflows[id]
			f.Workflows = append(f.Workflows, snapshotWorkflow{ID: id, Kind: r.Kind, Version: r.Version, State: r.State, UpdatedAt: r.UpdatedAt})
		}
	}
	if err := json.NewEncoder(w).Encode(&f); err != nil {
		return fmt.Errorf("meta: write snapshot: %w", err)
	}
	return nil
}

// readSnapshot reads a snapshot written by writeSnapshot of this or an
// older format into a new state.
func readSnapshot(r io.Reader) (*state, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("meta: read snapshot: %w", err)
	}
	var head struct {
		Format int `json:"format"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("meta: snapshot is not a pgshard meta snapshot: %w", err)
	}
	if head.Format < 1 || head.Format > snapshotFormatWorkflows {
		return nil, fmt.Errorf("meta: snapshot format %d: this pgshard reads formats 1 to %d (written by a newer pgshard?)", head.Format, snapshotFormatWorkflows)
	}
	var f snapshotFile
	if err := strictUnmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("meta: snapshot format %d: %w", head.Format, err)
	}
	s := newState()
	s.now = f.Now.UTC()
	for i, m := range f.Maps {
		parsed, err := shardmap.ParseYAML([]byte(m.YAML))
		if err != nil {
			return nil, fmt.Errorf("meta: snapshot: the map of epoch %d: %w", m.Epoch, err)
		}
		if i > 0 && m.Epoch <= f.Maps[i-1].Epoch {
			return nil, fmt.Errorf("meta: snapshot: map epochs are not increasing (%d after %d)", m.Epoch, f.Maps[i-1].Epoch)
		}
		parsed.Epoch = m.Epoch
		s.versions = append(s.versions, MapVersion{Epoch: m.Epoch, Map: parsed, YAML: []byte(m.YAML),
			AppliedAt: m.AppliedAt.UTC(), Comment: m.Comment, Author: m.Author})
	}
	for _, p := range f.Proxies {
		s.proxies[p.ID] = proxyRecord{addr: p.Addr, applied: p.AppliedEpoch, lastSeen: p.LastSeen.UTC(), lease: time.Duration(p.LeaseNanos), incarnation: p.Incarnation}
	}
	for _, m := range f.Members {
		s.apiAddrs[m.ID] = m.APIAddr
	}
	if head.Format < snapshotFormatWorkflows && (f.WorkflowSeq != 0 || len(f.Workflows) > 0) {
		return nil, fmt.Errorf("meta: snapshot format %d has workflows, which only format %d has", head.Format, snapshotFormatWorkflows)
	}
	s.workflowSeq = f.WorkflowSeq
	for _, w := range f.Workflows {
		if w.ID == "" || w.Version == 0 || w.Version > f.WorkflowSeq || s.workflows[w.ID].Version != 0 {
			return nil, fmt.Errorf("meta: snapshot: bad workflow record %q (version %d of %d, or a duplicate)", w.ID, w.Version, f.WorkflowSeq)
		}
		s.workflows[w.ID] = WorkflowRecord{ID: w.ID, Kind: w.Kind, Version: w.Version, State: w.State, UpdatedAt: w.UpdatedAt.UTC()}
	}
	return s, nil
}
