package controlplane

import (
	"encoding/json"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgshard/pgshard/replication/reshard"
)

// Resharding metrics of a meta member: read at each scrape from the
// replicated move records, so every member reports the same moves
// whichever leads.

// reshardStates are the values of the state label of
// pgshard_reshard_moves, each a group of phases an operator acts on.
var reshardStates = []string{"copying", "copied", "cutting_over", "cut_over", "cleaning", "done", "cancelled", "rolled_back"}

// reshardState is the state label of phase p.
func reshardState(p reshard.Phase) string {
	switch {
	case p == reshard.PhasePrepare || p == reshard.PhaseCopy || p == reshard.PhaseCopying:
		return "copying"
	case p == reshard.PhaseCopied:
		return "copied"
	case p == reshard.PhaseCutOver:
		return "cut_over"
	case p.InCutover():
		return "cutting_over"
	case p == reshard.PhaseCleaning || p == reshard.PhaseCancelling:
		return "cleaning"
	case p == reshard.PhaseDone:
		return "done"
	case p == reshard.PhaseCancelled:
		return "cancelled"
	case p == reshard.PhaseRolledBack:
		return "rolled_back"
	}
	return "copying"
}

// reshardMoveLabels label the series of one unfinished move.
var reshardMoveLabels = []string{"move", "distribution", "interval", "from", "to"}

// reshardCollector exports the moves of the records.
type reshardCollector struct {
	records interface {
		Workflows(kind string) []reshard.Record
	}

	moves, failing, invalid                      *prometheus.Desc
	rowsCopied, rowsTotal, bytesCopied, lagBytes *prometheus.Desc
	verifyEqual, cutoverSeconds, rowsDeleted     *prometheus.Desc
}

func newReshardCollector(records interface {
	Workflows(kind string) []reshard.Record
}) *reshardCollector {
	move := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, reshardMoveLabels, nil)
	}
	return &reshardCollector{
		records: records,
		moves: prometheus.NewDesc("pgshard_reshard_moves",
			"Resharding moves by state: copying, copied (waiting for cutover), cutting_over (a cutover or rollback running), cut_over (waiting for cleanup or rollback), cleaning (cleanup or cancel), done, cancelled, rolled_back.",
			[]string{"state"}, nil),
		failing: prometheus.NewDesc("pgshard_reshard_moves_failing",
			"Unfinished resharding moves whose last step failed (retried; see pgshard reshard status).", nil, nil),
		invalid: prometheus.NewDesc("pgshard_reshard_records_unreadable",
			"Resharding move records this member cannot decode.", nil, nil),
		rowsCopied:  move("pgshard_reshard_rows_copied", "Rows the initial copy of an unfinished move has copied (as last sampled)."),
		rowsTotal:   move("pgshard_reshard_rows_to_copy", "Rows of an unfinished move's interval on its source when the copy started."),
		bytesCopied: move("pgshard_reshard_bytes_copied", "Bytes the initial copy of an unfinished move has copied (as last sampled)."),
		lagBytes:    move("pgshard_reshard_lag_bytes", "Source WAL an unfinished move's target has not applied yet, in bytes (no series without replication)."),
		verifyEqual: move("pgshard_reshard_verify_equal", "1 when the last verify of an unfinished move found both shards equal, 0 when it found differences (no series before a verify)."),
		cutoverSeconds: move("pgshard_reshard_cutover_seconds",
			"From the hold epoch to the new owner's epoch acknowledged, of an unfinished move's last cutover (no series before one)."),
		rowsDeleted: move("pgshard_reshard_rows_deleted", "Rows deleted by an unfinished move's cleanup, cancel or rollback."),
	}
}

func (c *reshardCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.moves, c.failing, c.invalid, c.rowsCopied, c.rowsTotal, c.bytesCopied,
		c.lagBytes, c.verifyEqual, c.cutoverSeconds, c.rowsDeleted} {
		ch <- d
	}
}

func (c *reshardCollector) Collect(ch chan<- prometheus.Metric) {
	counts := make(map[string]float64, len(reshardStates))
	var failing, invalid float64
	for _, rec := range c.records.Workflows(reshard.WorkflowKind) {
		var st reshard.State
		if err := json.Unmarshal(rec.State, &st); err != nil {
			invalid++
			continue
		}
		counts[reshardState(st.Phase)]++
		if st.Phase.Terminal() {
			continue
		}
		if st.LastError != "" {
			failing++
		}
		lv := []string{rec.ID, st.Distribution, st.Interval(), st.From, st.To}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
		}
		p := st.Progress
		gauge(c.rowsCopied, float64(p.RowsCopied))
		gauge(c.rowsTotal, float64(p.RowsTotal))
		gauge(c.bytesCopied, float64(p.BytesCopied))
		gauge(c.rowsDeleted, float64(p.Deleted))
		if p.LagBytes >= 0 && !p.At.IsZero() {
			gauge(c.lagBytes, float64(p.LagBytes))
		}
		if st.Verify != nil {
			v := 0.0
			if st.Verify.Equal {
				v = 1
			}
			gauge(c.verifyEqual, v)
		}
		if d, ok := lastCutover(st.Events); ok {
			gauge(c.cutoverSeconds, d)
		}
	}
	for _, s := range reshardStates {
		ch <- prometheus.MustNewConstMetric(c.moves, prometheus.GaugeValue, counts[s], s)
	}
	ch <- prometheus.MustNewConstMetric(c.failing, prometheus.GaugeValue, failing)
	ch <- prometheus.MustNewConstMetric(c.invalid, prometheus.GaugeValue, invalid)
}

// lastCutover is the duration of the last cutover in a move's history:
// from its hold epoch to the acknowledgement of the new owner's epoch (a
// switched event followed by a cutover one; an aborted rollback also ends
// in cutover, after no switched event).
func lastCutover(events []reshard.Event) (float64, bool) {
	for i := len(events) - 1; i > 0; i-- {
		if events[i].Phase != reshard.PhaseCutOver || events[i-1].Phase != reshard.PhaseSwitched {
			continue
		}
		for j := i - 1; j >= 0; j-- {
			if events[j].Phase == reshard.PhaseHold {
				return events[i].At.Sub(events[j].At).Seconds(), true
			}
		}
		return 0, false
	}
	return 0, false
}
