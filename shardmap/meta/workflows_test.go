package meta

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestFSMWorkflowRecords: a record is created at expected version 0,
// changed only at its current version (a stale put changes nothing but
// the clock), keeps its kind, and is deleted at its version; versions are
// never reused, not even by a record created again after a delete.
func TestFSMWorkflowRecords(t *testing.T) {
	f := newFSM(testLogger(t))
	put := func(at time.Duration, c workflowPutCmd) workflowResult {
		t.Helper()
		return apply(t, f, t0.Add(at), cmdWorkflowPut, &c).(workflowResult)
	}
	if r := put(0, workflowPutCmd{ID: "w1", Kind: "resharding", State: []byte("copy 0")}); r.err != nil || r.version != 1 {
		t.Fatalf("create: %+v", r)
	}
	if r := put(time.Second, workflowPutCmd{ID: "w2", Kind: "2pc", State: []byte("prepared")}); r.err != nil || r.version != 2 {
		t.Fatalf("create another: %+v", r)
	}
	if r := put(2*time.Second, workflowPutCmd{ID: "w1", Kind: "resharding", ExpectVersion: 1, State: []byte("copy 500")}); r.err != nil || r.version != 3 {
		t.Fatalf("update: %+v", r)
	}
	want := WorkflowRecord{ID: "w1", Kind: "resharding", Version: 3, State: []byte("copy 500"), UpdatedAt: t0.Add(2 * time.Second)}
	if got := f.state().workflows["w1"]; !reflect.DeepEqual(got, want) {
		t.Fatalf("w1 = %+v, want %+v", got, want)
	}

	// Stale: another leader's step won.
	before := f.state().workflows
	r := put(3*time.Second, workflowPutCmd{ID: "w1", Kind: "resharding", ExpectVersion: 1, State: []byte("copy 400")})
	var stale *StaleWorkflowError
	if !errors.As(r.err, &stale) || stale.ID != "w1" || stale.Current != 3 || stale.Expected != 1 || !errors.Is(r.err, ErrStaleWorkflow) {
		t.Fatalf("stale put: %+v", r)
	}
	if !strings.Contains(r.err.Error(), "workflow w1 is at version 3, not 1") {
		t.Errorf("message %q", r.err)
	}
	// Creating what exists is stale too.
	if r := put(3*time.Second, workflowPutCmd{ID: "w1", Kind: "resharding", State: []byte("again")}); !errors.Is(r.err, ErrStaleWorkflow) {
		t.Fatalf("create over an existing record: %+v", r)
	}
	// A record keeps its kind.
	if r := put(3*time.Second, workflowPutCmd{ID: "w1", Kind: "2pc", ExpectVersion: 3}); r.err == nil || errors.Is(r.err, ErrStaleWorkflow) {
		t.Fatalf("put of another kind: %+v", r)
	}
	if !reflect.DeepEqual(f.state().workflows, before) || !f.state().now.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("refused puts changed the records (%+v) or not the clock (%v)", f.state().workflows, f.state().now)
	}

	// Delete at the current version; a stale delete is refused.
	if r := put(4*time.Second, workflowPutCmd{ID: "w2", Kind: "2pc", ExpectVersion: 1, Delete: true}); !errors.Is(r.err, ErrStaleWorkflow) {
		t.Fatalf("stale delete: %+v", r)
	}
	if r := put(4*time.Second, workflowPutCmd{ID: "w2", Kind: "2pc", ExpectVersion: 2, Delete: true}); r.err != nil || r.version != 0 {
		t.Fatalf("delete: %+v", r)
	}
	if _, ok := f.state().workflows["w2"]; ok {
		t.Fatal("w2 still there after its delete")
	}
	// Created again: a new version, never an old one.
	if r := put(5*time.Second, workflowPutCmd{ID: "w2", Kind: "2pc"}); r.err != nil || r.version != 4 {
		t.Fatalf("create again: %+v, want version 4", r)
	}
}

// TestSnapshotWorkflows: a state with workflow records is written in
// format 2 and restores equal; a format 1 snapshot that carries records
// is refused; a state without any record is still written in format 1
// (TestSnapshotFixture checks its bytes).
func TestSnapshotWorkflows(t *testing.T) {
	f := filledFSM(t)
	apply(t, f, t0.Add(5*time.Minute), cmdWorkflowPut, &workflowPutCmd{ID: "w1", Kind: "resharding", State: []byte(`{"step":"copy"}`)})
	apply(t, f, t0.Add(5*time.Minute), cmdWorkflowPut, &workflowPutCmd{ID: "w0", Kind: "2pc"})
	data := persist(t, f)
	if !bytes.HasPrefix(data, []byte(`{"format":2,`)) || !bytes.Contains(data, []byte(`"workflow_seq":2,"workflows":[{"id":"w0"`)) {
		t.Fatalf("snapshot with workflows:\n%s", data)
	}
	g := newFSM(testLogger(t))
	if err := g.Restore(readCloser(data)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.state(), g.state()) {
		t.Errorf("restored state differs:\n%+v\n%+v", f.state(), g.state())
	}
	if again := persist(t, g); !bytes.Equal(data, again) {
		t.Errorf("equal states wrote different snapshots:\n%s\n%s", data, again)
	}
	// The restored state goes on like the original (versions continue).
	for _, h := range []*fsm{f, g} {
		r := apply(t, h, t0.Add(time.Hour), cmdWorkflowPut, &workflowPutCmd{ID: "w1", Kind: "resharding", ExpectVersion: 1}).(workflowResult)
		if r.err != nil || r.version != 3 {
			t.Fatalf("put after restore: %+v", r)
		}
	}

	bad := bytes.Replace(data, []byte(`{"format":2,`), []byte(`{"format":1,`), 1)
	before := g.state()
	if err := g.Restore(readCloser(bad)); err == nil || !strings.Contains(err.Error(), "format 1 has workflows") {
		t.Fatalf("format 1 with workflows: %v", err)
	}
	if g.state() != before {
		t.Error("a refused snapshot changed the state")
	}
	if data := persist(t, filledFSM(t)); !bytes.HasPrefix(data, []byte(`{"format":1,`)) || bytes.Contains(data, []byte("workflow")) {
		t.Errorf("a state without workflows:\n%s", data)
	}
}

// TestSingleNodeWorkflows: PutWorkflow and DeleteWorkflow on a node
// compare and set through the log; the records read back.
func TestSingleNodeWorkflows(t *testing.T) {
	checkLeaks(t)
	ctx := t.Context()
	n := singleNode(t, testConfig(t, "m1", t.TempDir()))
	v1, err := n.PutWorkflow(ctx, "w1", "resharding", 0, []byte("a"))
	if err != nil || v1 == 0 {
		t.Fatalf("PutWorkflow = %d, %v", v1, err)
	}
	if _, err := n.PutWorkflow(ctx, "w1", "resharding", 0, []byte("b")); !errors.Is(err, ErrStaleWorkflow) {
		t.Fatalf("stale PutWorkflow: %v", err)
	}
	v2, err := n.PutWorkflow(ctx, "w1", "resharding", v1, []byte("c"))
	if err != nil || v2 <= v1 {
		t.Fatalf("PutWorkflow = %d, %v", v2, err)
	}
	if _, err := n.PutWorkflow(ctx, "w2", "2pc", 0, nil); err != nil {
		t.Fatal(err)
	}
	if r, ok := n.Workflow("w1"); !ok || r.Version != v2 || string(r.State) != "c" || r.Kind != "resharding" {
		t.Errorf("Workflow(w1) = %+v, %v", r, ok)
	}
	if rs := n.Workflows("resharding"); len(rs) != 1 || rs[0].ID != "w1" {
		t.Errorf("Workflows(resharding) = %+v", rs)
	}
	if rs := n.Workflows(""); len(rs) != 2 || rs[0].ID != "w1" || rs[1].ID != "w2" {
		t.Errorf("Workflows() = %+v", rs)
	}
	if _, err := n.PutWorkflow(ctx, "", "x", 0, nil); err == nil {
		t.Error("a workflow without an ID was accepted")
	}
	if _, err := n.PutWorkflow(ctx, "w3", "x", 0, make([]byte, maxWorkflowState+1)); err == nil {
		t.Error("an oversized state was accepted")
	}
	if err := n.DeleteWorkflow(ctx, "w1", "resharding", v1); !errors.Is(err, ErrStaleWorkflow) {
		t.Fatalf("stale DeleteWorkflow: %v", err)
	}
	if err := n.DeleteWorkflow(ctx, "w1", "resharding", v2); err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Workflow("w1"); ok {
		t.Error("w1 still there after DeleteWorkflow")
	}
}
