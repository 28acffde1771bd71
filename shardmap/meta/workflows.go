package meta

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Workflow records.
//
// A long-running workflow whose state proxies do not route by (a
// resharding's copy progress, a two-phase commit's outcome) keeps that
// state here, in the replicated state, as one record per workflow: a
// leader-side controller (internal/controlplane) reads its records, does
// one idempotent step and commits the next state with PutWorkflow, a
// compare-and-set on the record's version, so that the next leader
// resumes from the last committed step and a former leader that has not
// noticed yet cannot overwrite it. (A failover keeps its state in the
// shard map instead: proxies route by it.)

// maxWorkflowState bounds a record's state: records are small (progress,
// not data); the map is the big item of the state.
const maxWorkflowState = 1 << 20

// WorkflowRecord is the replicated state of one workflow.
type WorkflowRecord struct {
	// ID names the workflow; Kind says which controller owns it
	// ("resharding", ...). Kind never changes.
	ID, Kind string
	// Version changes with every put of any record: it is never reused,
	// not even by a record deleted and created again.
	Version uint64
	// State is the workflow's state in its controller's own encoding.
	// It is shared: do not change it.
	State []byte
	// UpdatedAt is the leader's clock at the last put.
	UpdatedAt time.Time
}

// ErrStaleWorkflow is matched by every [*StaleWorkflowError].
var ErrStaleWorkflow = errors.New("meta: stale workflow version")

// StaleWorkflowError is returned by PutWorkflow and DeleteWorkflow when
// the record is not at the version the caller expected: another change
// (or another leader) won. Current is 0 when there is no such record.
type StaleWorkflowError struct {
	ID                string
	Current, Expected uint64
}

// Error implements error.
func (e *StaleWorkflowError) Error() string {
	return fmt.Sprintf("meta: workflow %s is at version %d, not %d as expected: it changed meanwhile; read it again", e.ID, e.Current, e.Expected)
}

// Is matches ErrStaleWorkflow.
func (e *StaleWorkflowError) Is(target error) bool { return target == ErrStaleWorkflow }

// workflowResult is the FSM's response to workflow_put.
type workflowResult struct {
	version uint64 // the record's new version (0 after a delete)
	err     error
}

// putWorkflow is the compare-and-set of a workflow record. s is a fresh
// copy, changed in place.
func (s *state) putWorkflow(at time.Time, c *workflowPutCmd) (*state, any) {
	cur, ok := s.workflows[c.ID]
	if cur.Version != c.ExpectVersion {
		return s, workflowResult{err: &StaleWorkflowError{ID: c.ID, Current: cur.Version, Expected: c.ExpectVersion}}
	}
	if ok && cur.Kind != c.Kind {
		return s, workflowResult{err: fmt.Errorf("meta: workflow %s is a %s, not a %s", c.ID, cur.Kind, c.Kind)}
	}
	if c.Delete {
		if ok {
			s.workflows = maps.Clone(s.workflows)
			delete(s.workflows, c.ID)
		}
		return s, workflowResult{}
	}
	s.workflows = maps.Clone(s.workflows)
	s.workflowSeq++
	var st []byte // nil when empty, as a snapshot restores it
	if len(c.State) > 0 {
		st = slices.Clone(c.State)
	}
	s.workflows[c.ID] = WorkflowRecord{ID: c.ID, Kind: c.Kind, Version: s.workflowSeq, State: st, UpdatedAt: at}
	return s, workflowResult{version: s.workflowSeq}
}

// Workflow returns the record of workflow id in this node's state, and
// false when there is none.
func (n *Node) Workflow(id string) (WorkflowRecord, bool) {
	r, ok := n.fsm.state().workflows[id]
	return r, ok
}

// Workflows returns the records of kind ("" for all) in this node's
// state, by ID.
func (n *Node) Workflows(kind string) []WorkflowRecord {
	st := n.fsm.state()
	var out []WorkflowRecord
	for _, id := range slices.Sorted(maps.Keys(st.workflows)) {
		if r := st.workflows[id]; kind == "" || r.Kind == kind {
			out = append(out, r)
		}
	}
	return out
}

// PutWorkflow sets the state of workflow id of kind, if its record is
// still at expectVersion (0: there is none yet), and returns the record's
// new version. Errors: a *NotLeaderError on a follower; a
// *StaleWorkflowError (errors.Is ErrStaleWorkflow) when the record is at
// another version; an error wrapping ErrUncertain when the outcome is
// unknown (read the record before retrying).
func (n *Node) PutWorkflow(ctx context.Context, id, kind string, expectVersion uint64, state []byte) (uint64, error) {
	return n.proposeWorkflow(ctx, &workflowPutCmd{ID: id, Kind: kind, ExpectVersion: expectVersion, State: state})
}

// DeleteWorkflow removes the record of workflow id of kind (a finished
// workflow) if it is still at expectVersion. Errors as PutWorkflow.
func (n *Node) DeleteWorkflow(ctx context.Context, id, kind string, expectVersion uint64) error {
	_, err := n.proposeWorkflow(ctx, &workflowPutCmd{ID: id, Kind: kind, ExpectVersion: expectVersion, Delete: true})
	return err
}

func (n *Node) proposeWorkflow(ctx context.Context, c *workflowPutCmd) (uint64, error) {
	switch {
	case c.ID == "" || c.Kind == "":
		return 0, errors.New("meta: a workflow needs an ID and a kind")
	case len(c.State) > maxWorkflowState:
		return 0, fmt.Errorf("meta: workflow %s: state of %d bytes, at most %d", c.ID, len(c.State), maxWorkflowState)
	}
	res, err := n.propose(ctx, cmdWorkflowPut, c)
	if err != nil {
		return 0, err
	}
	r, ok := res.(workflowResult)
	if !ok {
		return 0, fmt.Errorf("meta: workflow_put answered %T", res)
	}
	return r.version, r.err
}
