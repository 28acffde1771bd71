package proxy

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/wire"
)

func TestDtxID(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 13, 0, 0, 0, time.UTC)
	older := newDtxID(t0, 0xffffffff, 99)
	younger := newDtxID(t0.Add(time.Microsecond), 0, 1)
	if !(younger > older) {
		t.Fatalf("IDs do not sort by age: %q <= %q", younger, older)
	}
	app := dtxTagPrefix + newDtxID(time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), 0xffffffff, 1<<40)
	if len(app) > 63 {
		t.Fatalf("tag %q is %d bytes; application_name keeps 63", app, len(app))
	}
	if got := dtxOfApp(app); got == "" || !strings.HasPrefix(app, dtxTagPrefix) || dtxTagPrefix+got != app {
		t.Fatalf("dtxOfApp(%q) = %q", app, got)
	}
	for _, app := range []string{"", "psql", "pgshard dtx", "pgshard"} {
		if got := dtxOfApp(app); got != "" {
			t.Errorf("dtxOfApp(%q) = %q, want none", app, got)
		}
	}
	if got := dtxTagSQL("1-2-3"); got != "SET LOCAL application_name = 'pgshard dtx 1-2-3'" {
		t.Errorf("dtxTagSQL = %q", got)
	}
}

func TestParsePIDArray(t *testing.T) {
	for in, want := range map[string][]int32{"{}": nil, "{42}": {42}, "{1,2,300000}": {1, 2, 300000}} {
		got, err := parsePIDArray(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("parsePIDArray(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "1,2", "{a}", "{1,}"} {
		if _, err := parsePIDArray(in); err == nil {
			t.Errorf("parsePIDArray(%q): no error", in)
		}
	}
}

func TestWaitEdges(t *testing.T) {
	procs := []dlProc{
		{pid: 10, dtx: "A", blockers: []int32{20}}, // A waits for B directly
		{pid: 20, dtx: "B"},
		{pid: 30, dtx: "C", blockers: []int32{40}}, // C waits for D through a plain session (40)
		{pid: 40, blockers: []int32{50, 10}},       // ... which waits for D and A
		{pid: 50, dtx: "D"},
		{pid: 60, dtx: "E", blockers: []int32{0, 70, 60}}, // a prepared transaction, a pid not listed, itself
		{pid: 80, blockers: []int32{20}},                  // a plain session waiting: no edge
	}
	got := waitEdges("s0", procs)
	want := []dlEdge{
		{from: "A", to: "B", shard: "s0", pid: 10},
		{from: "C", to: "A", shard: "s0", pid: 30},
		{from: "C", to: "D", shard: "s0", pid: 30},
	}
	key := func(e dlEdge) string { return e.from + ">" + e.to }
	slices.SortFunc(got, func(a, b dlEdge) int { return strings.Compare(key(a), key(b)) })
	if !slices.Equal(got, want) {
		t.Fatalf("edges %+v, want %+v", got, want)
	}
}

func TestChooseVictims(t *testing.T) {
	const t1, t2, t3, t4 = "0001-a-1", "0002-b-1", "0003-a-2", "0004-b-2" // by age
	for _, tc := range []struct {
		name   string
		edges  []dlEdge
		victim []string
		shards []string
	}{
		{name: "two transactions over two shards", edges: []dlEdge{
			{from: t1, to: t2, shard: "s1", pid: 11}, {from: t2, to: t1, shard: "s0", pid: 20}},
			victim: []string{t2}, shards: []string{"s0", "s1"}},
		{name: "cycle on one shard: PostgreSQL's", edges: []dlEdge{
			{from: t1, to: t2, shard: "s0", pid: 10}, {from: t2, to: t1, shard: "s0", pid: 20}}},
		{name: "a chain of waits", edges: []dlEdge{
			{from: t1, to: t2, shard: "s0", pid: 10}, {from: t2, to: t3, shard: "s1", pid: 21}, {from: t4, to: t3, shard: "s0", pid: 40}}},
		{name: "three transactions over three shards, with a waiter outside", edges: []dlEdge{
			{from: t3, to: t1, shard: "s0", pid: 30}, {from: t1, to: t2, shard: "s1", pid: 11}, {from: t2, to: t3, shard: "s2", pid: 22},
			{from: t4, to: t3, shard: "s2", pid: 42}},
			victim: []string{t3}, shards: []string{"s0", "s1", "s2"}},
		{name: "two cycles", edges: []dlEdge{
			{from: t1, to: t2, shard: "s1", pid: 11}, {from: t2, to: t1, shard: "s0", pid: 20},
			{from: t3, to: t4, shard: "s0", pid: 30}, {from: t4, to: t3, shard: "s1", pid: 41}},
			victim: []string{t2, t4}},
		{name: "two cycles through the youngest: one victim", edges: []dlEdge{
			{from: t1, to: t4, shard: "s1", pid: 11}, {from: t4, to: t1, shard: "s0", pid: 40},
			{from: t2, to: t4, shard: "s1", pid: 21}, {from: t4, to: t2, shard: "s0", pid: 40}},
			victim: []string{t4}},
		{name: "two cycles through one transaction", edges: []dlEdge{
			{from: t1, to: t4, shard: "s1", pid: 11}, {from: t4, to: t1, shard: "s0", pid: 40},
			{from: t1, to: t3, shard: "s1", pid: 11}, {from: t3, to: t1, shard: "s0", pid: 30}},
			victim: []string{t3, t4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var first []dlVictim
			for i := range 20 { // the same choice whatever the order of the edges
				edges := slices.Clone(tc.edges)
				rand.Shuffle(len(edges), func(i, j int) { edges[i], edges[j] = edges[j], edges[i] })
				vs := chooseVictims(edges)
				var got []string
				for _, v := range vs {
					got = append(got, v.dtx)
					for _, w := range v.waits {
						if w.from != v.dtx {
							t.Fatalf("victim %s: wait %+v is another's", v.dtx, w)
						}
					}
					if len(v.waits) == 0 {
						t.Fatalf("victim %s without a wait to cancel", v.dtx)
					}
				}
				slices.Sort(got)
				if !slices.Equal(got, tc.victim) {
					t.Fatalf("victims %v, want %v", got, tc.victim)
				}
				if tc.shards != nil && !slices.Equal(vs[0].shards, tc.shards) {
					t.Fatalf("shards %v, want %v", vs[0].shards, tc.shards)
				}
				if i == 0 {
					first = vs
				} else if len(vs) != len(first) || len(vs) > 0 && !slices.Equal(vs[0].members, first[0].members) {
					t.Fatalf("choice depends on the order of the edges: %+v vs %+v", vs, first)
				}
			}
		})
	}
}

// TestDtxVictimError: a victim's next 57014 becomes the deadlock's
// error, once; other errors pass (and end the wait), and without a
// victim nothing changes.
func TestDtxVictimError(t *testing.T) {
	s := &session{}
	canceled := wire.AppendErrorResponse(nil, &wire.Error{Code: wire.SQLStateQueryCanceled, Message: "canceling statement due to user request"})
	other := wire.AppendErrorResponse(nil, &wire.Error{Code: wire.SQLStateUniqueViolation, Message: "duplicate key"})
	if got := s.dtxFrame(canceled); !bytes.Equal(got, canceled) {
		t.Fatal("57014 changed without a victim")
	}
	v := dlVictim{dtx: "2", members: []string{"1", "2"}, shards: []string{"s0", "s1"}}
	s.dtx.victim.Store(deadlockError(v, "s0"))
	if got := s.dtxFrame(other); !bytes.Equal(got, other) {
		t.Fatal("another error changed")
	}
	if got := s.dtxFrame(canceled); !bytes.Equal(got, canceled) {
		t.Fatal("57014 after another error (the statement had ended) changed")
	}
	s.dtx.victim.Store(deadlockError(v, "s0"))
	got := s.dtxFrame(canceled)
	if wire.ErrorCode(got) != wire.SQLStateDeadlockDetected || wire.ErrorField(got, 'M') != "deadlock detected across shards" ||
		!strings.Contains(wire.ErrorField(got, 'D'), "shard s0") || !strings.Contains(wire.ErrorField(got, 'D'), "s0, s1 with 1;") {
		t.Fatalf("victim's error: %q / %q", wire.ErrorField(got, 'M'), wire.ErrorField(got, 'D'))
	}
	if got := s.dtxFrame(canceled); !bytes.Equal(got, canceled) {
		t.Fatal("a second 57014 changed too")
	}
	s.dtx.victim.Store(deadlockError(v, "s1"))
	if err := s.dtxError(wire.Errorf(wire.SQLStateUniqueViolation, "x")); wire.AsError(err).Code != wire.SQLStateUniqueViolation {
		t.Fatalf("another error became %v", err)
	}
	if err := s.dtxError(&wire.Error{Code: wire.SQLStateQueryCanceled, Message: "shard s1: canceling statement"}); wire.AsError(err).Code != wire.SQLStateDeadlockDetected {
		t.Fatalf("scatter's 57014 became %v", err)
	}
	if err := s.dtxError(&wire.Error{Code: wire.SQLStateQueryCanceled}); wire.AsError(err).Code != wire.SQLStateQueryCanceled {
		t.Fatalf("a second 57014 became %v", err)
	}
}

// TestDtxVictimDisarm: the 40P01 conversion armed by the detector is
// disarmed when its cancel was not sent and when the waiting statement
// completes normally, so that a later 57014 (statement_timeout, a
// client's cancel) stays 57014; it stays armed while a statement is in
// flight, and a disarm of an older arming leaves a newer one alone.
func TestDtxVictimDisarm(t *testing.T) {
	canceled := wire.AppendErrorResponse(nil, &wire.Error{Code: wire.SQLStateQueryCanceled, Message: "canceling statement due to statement timeout"})
	v := dlVictim{dtx: "2", members: []string{"1", "2"}, shards: []string{"s0", "s1"}}

	s := &session{}
	armed := deadlockError(v, "s0")
	s.dtx.victim.Store(armed)
	s.dtxDisarm(armed) // no cancel went out
	if got := s.dtxFrame(canceled); !bytes.Equal(got, canceled) {
		t.Fatalf("57014 after a cancel that was not sent became %s", wire.ErrorCode(got))
	}

	newer := deadlockError(v, "s1")
	s.dtx.victim.Store(newer)
	s.dtxDisarm(armed)
	if s.dtx.victim.Load() != newer {
		t.Fatal("disarming an older arming removed a newer one")
	}

	// The statement is still in flight: a sync entry is queued.
	s.queue.push(entry{kind: entrySync})
	s.dtxSettled()
	if s.dtx.victim.Load() != newer {
		t.Fatal("disarmed while a statement was still in flight")
	}
	// It completed normally: the cancel, if it arrives, finds nothing.
	s.queue.popSync()
	s.dtxSettled()
	if got := s.dtxFrame(canceled); !bytes.Equal(got, canceled) {
		t.Fatalf("57014 after the waiting statement completed became %s", wire.ErrorCode(got))
	}

	// A statement over several shards that completed disarms too.
	s.dtx.victim.Store(armed)
	done := s.dtxScatter()
	if err := done(nil); err != nil {
		t.Fatal(err)
	}
	if err := s.dtxError(&wire.Error{Code: wire.SQLStateQueryCanceled}); wire.AsError(err).Code != wire.SQLStateQueryCanceled {
		t.Fatalf("57014 after the statement over several shards completed became %v", err)
	}
}
