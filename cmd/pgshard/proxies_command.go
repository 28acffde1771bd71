package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// newProxiesCommand is `pgshard proxies`: the proxies the meta cluster
// knows from their heartbeats.
func newProxiesCommand(stdout io.Writer) *cobra.Command {
	cmd := groupCommand("proxies", "List the proxies that report to the meta cluster")
	cmd.AddCommand(newProxiesListCommand(stdout))
	return cmd
}

type proxiesListOptions struct {
	conn   metaConnOptions
	stdout io.Writer
}

func newProxiesListCommand(stdout io.Writer) *cobra.Command {
	o := &proxiesListOptions{stdout: stdout}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the proxies: address, applied map epoch, last heartbeat, alive",
		Long: `List the proxies the meta cluster knows from their heartbeats: the address they
listen on, the epoch of the map they route with, when they were last heard
from, and whether they are alive (their lease still runs). Only live proxies
count when "pgshard map apply --wait" waits for an epoch.`,
		Args:              usageArgs(cobra.NoArgs),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE:              o.conn.runE(o.Run),
	}
	o.conn.addFlags(cmd)
	return cmd
}

// proxyJSON is a proxy as -o json prints it.
type proxyJSON struct {
	ID           string    `json:"id"`
	Address      string    `json:"address"`
	AppliedEpoch uint64    `json:"applied_epoch"`
	LastSeen     time.Time `json:"last_seen,omitzero"`
	LeaseSeconds float64   `json:"lease_seconds"`
	Alive        bool      `json:"alive"`
}

func proxyToJSON(p metarpc.ProxyStatus) proxyJSON {
	return proxyJSON{
		ID:           p.ID,
		Address:      p.Address,
		AppliedEpoch: p.AppliedEpoch,
		LastSeen:     p.LastSeen,
		LeaseSeconds: p.Lease.Seconds(),
		Alive:        p.Live,
	}
}

// proxiesListResult is the output of proxies list.
type proxiesListResult struct {
	Proxies []proxyJSON `json:"proxies"`
	now     time.Time   // when the list was read, for "last seen"
}

func (r *proxiesListResult) writeTable(w io.Writer) error {
	if len(r.Proxies) == 0 {
		_, err := io.WriteString(w, "No proxy has reported to the meta cluster.\n")
		return err
	}
	return writeProxyTable(w, r.now, r.Proxies)
}

// writeProxyTable prints proxies as a table.
func writeProxyTable(w io.Writer, now time.Time, proxies []proxyJSON) error {
	t := newTable(w, "ID", "ADDRESS", "EPOCH", "LAST SEEN", "ALIVE")
	for _, p := range proxies {
		t.row(p.ID, orDash(p.Address), fmt.Sprint(p.AppliedEpoch), formatAge(now, p.LastSeen), yesNo(p.Alive))
	}
	return t.flush()
}

func (o *proxiesListOptions) Run(ctx context.Context) error {
	return o.conn.withClient(ctx, func(cctx context.Context, c *metarpc.Client) error {
		ps, err := c.ListProxies(cctx)
		if err != nil {
			return o.conn.explain("list the proxies", err)
		}
		r := &proxiesListResult{Proxies: make([]proxyJSON, 0, len(ps)), now: time.Now()}
		for _, p := range ps {
			r.Proxies = append(r.Proxies, proxyToJSON(p))
		}
		return newPrinter(o.conn.output, o.stdout).print(r)
	})
}
