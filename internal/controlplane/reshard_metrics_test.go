package controlplane

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pgshard/pgshard/replication/reshard"
	"github.com/pgshard/pgshard/shardmap"
)

// fixedRecords is a record store holding fixed move records.
type fixedRecords []reshard.Record

func (f fixedRecords) Workflows(kind string) []reshard.Record {
	if kind != reshard.WorkflowKind {
		return nil
	}
	return f
}

// TestReshardCollector: moves are counted by state, an unfinished one has
// its progress, lag, verify and last cutover (hold to cutover, not an
// aborted rollback's return), a finished one no per-move series, and an
// unreadable record is counted.
func TestReshardCollector(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	rec := func(id string, st reshard.State) reshard.Record {
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		return reshard.Record{ID: id, Version: 1, State: b}
	}
	mv := reshard.Move{KeyType: shardmap.KeyBigint, Strategy: shardmap.Range, Lo: shardmap.Int64Bound(250), Hi: shardmap.Int64Bound(501)}
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	cutOver := reshard.State{Distribution: "users", Move: mv, From: "shard0", To: "spare", Phase: reshard.PhaseCutOver,
		Progress: reshard.CopyProgress{RowsCopied: 700, RowsTotal: 753, BytesCopied: 65536, LagBytes: 1024, At: t0},
		Verify:   &reshard.VerifyResult{Equal: true, Fenced: true},
		Events: []reshard.Event{{At: at(0), Phase: reshard.PhaseCopied}, {At: at(1), Phase: reshard.PhaseHold},
			{At: at(1.2), Phase: reshard.PhaseHeld}, {At: at(1.5), Phase: reshard.PhaseSwitched}, {At: at(1.75), Phase: reshard.PhaseCutOver},
			// An aborted rollback, back in cutover: not a cutover.
			{At: at(5), Phase: reshard.PhaseRollbackHold}, {At: at(9), Phase: reshard.PhaseRollbackAborting}, {At: at(9.5), Phase: reshard.PhaseCutOver}}}
	copying := reshard.State{Distribution: "users", Move: mv, From: "shard1", To: "spare", Phase: reshard.PhaseCopying,
		Progress: reshard.CopyProgress{LagBytes: -1, At: t0}, LastError: "connection refused"}
	done := reshard.State{Distribution: "users", Move: mv, From: "shard0", To: "spare", Phase: reshard.PhaseDone}
	recs := fixedRecords{rec("mv_a", cutOver), rec("mv_b", copying), rec("mv_c", done), {ID: "mv_d", State: []byte("{")}}

	reg := prometheus.NewRegistry()
	reg.MustRegister(newReshardCollector(recs))
	want := `
# HELP pgshard_reshard_cutover_seconds From the hold epoch to the new owner's epoch acknowledged, of an unfinished move's last cutover (no series before one).
# TYPE pgshard_reshard_cutover_seconds gauge
pgshard_reshard_cutover_seconds{distribution="users",from="shard0",interval="[250, 501)",move="mv_a",to="spare"} 0.75
# HELP pgshard_reshard_lag_bytes Source WAL an unfinished move's target has not applied yet, in bytes (no series without replication).
# TYPE pgshard_reshard_lag_bytes gauge
pgshard_reshard_lag_bytes{distribution="users",from="shard0",interval="[250, 501)",move="mv_a",to="spare"} 1024
# HELP pgshard_reshard_moves_failing Unfinished resharding moves whose last step failed (retried; see pgshard reshard status).
# TYPE pgshard_reshard_moves_failing gauge
pgshard_reshard_moves_failing 1
# HELP pgshard_reshard_records_unreadable Resharding move records this member cannot decode.
# TYPE pgshard_reshard_records_unreadable gauge
pgshard_reshard_records_unreadable 1
# HELP pgshard_reshard_rows_copied Rows the initial copy of an unfinished move has copied (as last sampled).
# TYPE pgshard_reshard_rows_copied gauge
pgshard_reshard_rows_copied{distribution="users",from="shard0",interval="[250, 501)",move="mv_a",to="spare"} 700
pgshard_reshard_rows_copied{distribution="users",from="shard1",interval="[250, 501)",move="mv_b",to="spare"} 0
# HELP pgshard_reshard_verify_equal 1 when the last verify of an unfinished move found both shards equal, 0 when it found differences (no series before a verify).
# TYPE pgshard_reshard_verify_equal gauge
pgshard_reshard_verify_equal{distribution="users",from="shard0",interval="[250, 501)",move="mv_a",to="spare"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pgshard_reshard_cutover_seconds", "pgshard_reshard_lag_bytes",
		"pgshard_reshard_moves_failing", "pgshard_reshard_records_unreadable", "pgshard_reshard_rows_copied", "pgshard_reshard_verify_equal"); err != nil {
		t.Error(err)
	}
	for state, n := range map[string]float64{"copying": 1, "cut_over": 1, "done": 1, "copied": 0, "cutting_over": 0, "cleaning": 0, "cancelled": 0, "rolled_back": 0} {
		if got := gaugeValue(t, reg, "pgshard_reshard_moves", "state", state); got != n {
			t.Errorf("pgshard_reshard_moves{state=%q} = %v, want %v", state, got, n)
		}
	}
}

// gaugeValue is the value of the gauge name{label="value"} in reg.
func gaugeValue(t *testing.T, reg prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return 0
}
