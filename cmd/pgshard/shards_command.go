package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// newShardsCommand is `pgshard shards`: the shards of the current map.
func newShardsCommand(stdout io.Writer) *cobra.Command {
	cmd := groupCommand("shards", "List the shards of the current shard map; add one; re-join a fenced server")
	cmd.AddCommand(newShardsListCommand(stdout), newShardsAddCommand(stdout), newShardsRejoinCommand(stdout))
	return cmd
}

type shardsListOptions struct {
	conn   metaConnOptions
	stdout io.Writer
}

func newShardsListCommand(stdout io.Writer) *cobra.Command {
	o := &shardsListOptions{stdout: stdout}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the shards of the current map: primary, replicas, fenced, switch, endpoint health",
		Long: `List the shards of the current shard map: name, primary, replicas, state
(active, readonly or offline), fenced former primaries, and the failover or
switchover in progress. Then, per endpoint, whether it is up, its replication
lag (replicas) and how many of the live proxies reach it (PROXIES: "2 of 3
reach it"; "-" when no proxy reports).

Endpoint health is what the meta member that answers knows: from its own
health monitor, when it runs one, and from the proxies' reports, which only
the leader keeps. -o json prints an object with the map's epoch and the
shards, each with its endpoints.`,
		Args:              usageArgs(cobra.NoArgs),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE:              o.conn.runE(o.Run),
	}
	o.conn.addFlags(cmd)
	return cmd
}

// shardsListResult is the output of shards list.
type shardsListResult struct {
	// Epoch is the epoch of the map the shards are from; 0 when there is
	// no map yet.
	Epoch  uint64            `json:"epoch"`
	Shards []shardStatusJSON `json:"shards"`
	// TwoPhaseProblems are the shards where two-phase commit cannot work
	// (max_prepared_transactions = 0, say), by the leader's last
	// recovery round; omitted when there are none or it is unknown.
	TwoPhaseProblems []metarpc.TransactionProblem `json:"two_phase_problems,omitempty"`
}

// shardStatusJSON is a shard with the health of its endpoints.
type shardStatusJSON struct {
	shardJSON
	// Endpoints are the primary, the replicas and the fenced endpoints.
	Endpoints []endpointJSON `json:"endpoints"`
}

// endpointJSON is one endpoint of a shard and its health.
type endpointJSON struct {
	Address string `json:"address"`
	Role    string `json:"role"`  // primary, replica or fenced
	State   string `json:"state"` // up, down or unknown
	// InRecovery is pg_is_in_recovery() at the latest successful probe.
	InRecovery bool `json:"in_recovery"`
	LagKnown   bool `json:"lag_known"`
	// LagBytes is null unless LagKnown. LagSeconds is null unless LagKnown,
	// and also when the replica has replayed nothing since it started
	// (its lag in seconds is unbounded).
	LagBytes   *uint64  `json:"lag_bytes"`
	LagSeconds *float64 `json:"lag_seconds"`
	LastError  string   `json:"last_error,omitempty"`
	// UnreachableReports live proxies of ReportingProxies cannot reach it
	// (both 0 when the member that answered is not the leader).
	UnreachableReports int `json:"unreachable_reports"`
	ReportingProxies   int `json:"reporting_proxies"`
}

func endpointToJSON(e metarpc.EndpointStatus) endpointJSON {
	out := endpointJSON{
		Address: e.Addr, Role: e.Role, State: e.State, InRecovery: e.InRecovery, LagKnown: e.LagKnown,
		LastError: e.LastError, UnreachableReports: e.UnreachableReports, ReportingProxies: e.ReportingProxies,
	}
	if e.LagKnown {
		b := e.LagBytes
		out.LagBytes = &b
		if !math.IsInf(e.LagSeconds, 0) && !math.IsNaN(e.LagSeconds) {
			s := e.LagSeconds
			out.LagSeconds = &s
		}
	}
	return out
}

func shardStatusToJSON(s *metarpc.ShardStatus) shardStatusJSON {
	out := shardStatusJSON{shardJSON: shardToJSON(&s.Shard), Endpoints: make([]endpointJSON, 0, len(s.Endpoints))}
	for _, e := range s.Endpoints {
		out.Endpoints = append(out.Endpoints, endpointToJSON(e))
	}
	return out
}

func (r *shardsListResult) writeTable(w io.Writer) error {
	if err := r.writeShards(w); err != nil {
		return err
	}
	if len(r.TwoPhaseProblems) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("\nTransactions over several shards cannot commit where two-phase commit fails:\n")
	for _, p := range r.TwoPhaseProblems {
		fmt.Fprintf(&b, "  %s (%s): %s\n", p.Shard, p.Addr, p.Error)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// transactionsProbe bounds shards list's look at two-phase problems.
const transactionsProbe = time.Second

func (r *shardsListResult) writeShards(w io.Writer) error {
	if r.Epoch == 0 {
		_, err := io.WriteString(w, "No shard map has been applied yet.\n")
		return err
	}
	t := newTable(w, "NAME", "PRIMARY", "REPLICAS", "STATE", "FENCED", "SWITCH")
	for _, s := range r.Shards {
		t.row(s.Name, s.Primary, orDash(strings.Join(s.Replicas, ",")), s.State, orDash(strings.Join(s.Fenced, ",")), orDash(s.Switch.describe()))
	}
	if err := t.flush(); err != nil {
		return err
	}
	known := false
	for _, s := range r.Shards {
		for _, e := range s.Endpoints {
			known = known || e.State != metarpc.StateUnknown || e.ReportingProxies > 0
		}
	}
	if !known {
		_, err := io.WriteString(w, "\nEndpoint health: unknown. The meta member that answered runs no health monitor\n"+
			"and has no proxy reports (only the leader keeps them).\n")
		return err
	}
	if _, err := io.WriteString(w, "\n"); err != nil {
		return err
	}
	t = newTable(w, "SHARD", "ENDPOINT", "ROLE", "HEALTH", "LAG", "PROXIES")
	var errs []string
	for _, s := range r.Shards {
		for _, e := range s.Endpoints {
			t.row(s.Name, e.Address, e.Role, e.health(), e.lag(), e.reports())
			if e.LastError != "" {
				errs = append(errs, fmt.Sprintf("  %s (%s of %s): %s", e.Address, e.Role, s.Name, e.LastError))
			}
		}
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(errs) > 0 {
		_, err := io.WriteString(w, "\nLatest probe errors:\n"+strings.Join(errs, "\n")+"\n")
		return err
	}
	return nil
}

// health is the HEALTH cell: up, down or unknown, and a warning when the
// server's recovery state contradicts its role. A fenced server may be
// either (a former primary, or a replica being rebuilt): it says which.
func (e *endpointJSON) health() string {
	if e.State != metarpc.StateUp {
		return e.State
	}
	switch {
	case e.Role == metarpc.RoleFenced && e.InRecovery:
		return "up (in recovery)"
	case e.Role == metarpc.RoleFenced:
		return "up (not in recovery)"
	case e.Role == metarpc.RolePrimary && e.InRecovery:
		return "up (in recovery!)"
	case e.Role != metarpc.RolePrimary && !e.InRecovery:
		return "up (not in recovery!)"
	}
	return e.State
}

// lag is the LAG cell of a replica: "1.5 MiB, 3.2s"; "-" when unknown.
func (e *endpointJSON) lag() string {
	if !e.LagKnown || e.LagBytes == nil {
		return "-"
	}
	secs := "no replay yet"
	if e.LagSeconds != nil {
		secs = strconv.FormatFloat(*e.LagSeconds, 'f', 1, 64) + "s"
	}
	return formatBytes(*e.LagBytes) + ", " + secs
}

// reports is the PROXIES cell: how many of the live proxies reach the
// endpoint ("2 of 3 reach it", "1 of 1 reach it"); "-" when no proxy
// reported.
func (e *endpointJSON) reports() string {
	if e.ReportingProxies == 0 {
		return "-"
	}
	return fmt.Sprintf("%d of %d reach it", e.ReportingProxies-e.UnreachableReports, e.ReportingProxies)
}

// formatBytes formats a size in bytes for people: "512 B", "1.5 MiB".
func formatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + " B"
	}
	v, i := float64(n), -1
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + string("KMGTP"[i]) + "iB"
}

func (o *shardsListOptions) Run(ctx context.Context) error {
	return o.conn.withClient(ctx, func(cctx context.Context, c *metarpc.Client) error {
		epoch, shards, err := c.ListShards(cctx)
		if err != nil {
			return o.conn.explain("list the shards", err)
		}
		r := &shardsListResult{Epoch: epoch, Shards: make([]shardStatusJSON, 0, len(shards))}
		for i := range shards {
			r.Shards = append(r.Shards, shardStatusToJSON(&shards[i]))
		}
		// Best effort: a cluster without two-phase recovery, or one that
		// has not scanned yet, has nothing to add.
		tctx, cancel := context.WithTimeout(cctx, transactionsProbe)
		if rep, err := c.ListTransactions(tctx); err == nil {
			r.TwoPhaseProblems = rep.Problems
		}
		cancel()
		return newPrinter(o.conn.output, o.stdout).print(r)
	})
}
