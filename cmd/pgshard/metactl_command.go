package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// metaSubcommands are constructors of more `pgshard meta` subcommands,
// which files other than this one add from an init function, e.g. the
// server in meta_command.go:
//
//	func init() { metaSubcommands = append(metaSubcommands, newMetaRunCommand) }
//
// newMetaCommand calls each constructor once per run, so each must return
// a new command. Such a command gets the injected streams from cobra:
// cmd.InOrStdin(), cmd.OutOrStdout() and cmd.ErrOrStderr() (run sets them
// on the root). The client commands of this file (status, join, remove)
// carry their connection flags themselves, so a subcommand added here
// inherits no flags from its parent.
var metaSubcommands []func() *cobra.Command

// newMetaCommand is `pgshard meta`: the members of the meta cluster.
func newMetaCommand(stdout io.Writer) *cobra.Command {
	cmd := groupCommand("meta", "Run and manage the members of the meta cluster (Raft) that holds the shard map")
	cmd.AddCommand(
		newMetaStatusCommand(stdout),
		newMetaJoinCommand(stdout),
		newMetaRemoveCommand(stdout),
	)
	for _, sub := range metaSubcommands {
		cmd.AddCommand(sub())
	}
	return cmd
}

// --- meta status

type metaStatusOptions struct {
	conn   metaConnOptions
	stdout io.Writer
}

func newMetaStatusCommand(stdout io.Writer) *cobra.Command {
	o := &metaStatusOptions{stdout: stdout}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the Raft group as the member that answers sees it",
		Long: `Show the Raft group as the member that answers sees it: that member's state
(leader, follower, candidate), the leader it knows, the term, its log indexes
(last stored, committed, applied), the map epoch it has applied, and the
members with their suffrage (voter, nonvoter, staging) and API addresses. With
several --meta addresses, the first that answers is asked; give one address to
ask a given member. A member's API address is the one it recorded while it led
or that "pgshard meta join --api-addr" gave; for a member with neither, each
--meta address is asked who it is.`,
		Args:              usageArgs(cobra.NoArgs),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE:              o.conn.runE(o.Run),
	}
	o.conn.addFlags(cmd)
	return cmd
}

// metaStatusResult is the output of meta status.
type metaStatusResult struct {
	ID           string       `json:"id"`
	RaftAddress  string       `json:"raft_address"`
	APIAddress   string       `json:"api_address"`
	State        string       `json:"state"`
	Leader       leaderJSON   `json:"leader"`
	Term         uint64       `json:"term"`
	LastIndex    uint64       `json:"last_index"`
	CommitIndex  uint64       `json:"commit_index"`
	AppliedIndex uint64       `json:"applied_index"`
	LastContact  time.Time    `json:"last_contact,omitzero"`
	MapEpoch     uint64       `json:"map_epoch"`
	Members      []memberJSON `json:"members"`
	now          time.Time    // when the status was read, for "last contact"
}

// leaderJSON names the leader; empty fields while none is known.
type leaderJSON struct {
	ID          string `json:"id"`
	RaftAddress string `json:"raft_address"`
	APIAddress  string `json:"api_address"`
}

type memberJSON struct {
	ID          string `json:"id"`
	RaftAddress string `json:"raft_address"`
	APIAddress  string `json:"api_address"`
	Suffrage    string `json:"suffrage"`
	Leader      bool   `json:"leader"`
}

func statusToResult(st metarpc.NodeStatus, now time.Time) *metaStatusResult {
	r := &metaStatusResult{
		ID:           st.ID,
		RaftAddress:  st.RaftAddress,
		APIAddress:   st.APIAddress,
		State:        st.State,
		Leader:       leaderJSON{ID: st.LeaderID, RaftAddress: st.LeaderRaftAddress, APIAddress: st.LeaderAPIAddress},
		Term:         st.Term,
		LastIndex:    st.LastIndex,
		CommitIndex:  st.CommitIndex,
		AppliedIndex: st.AppliedIndex,
		LastContact:  st.LastContact,
		MapEpoch:     st.MapEpoch,
		Members:      make([]memberJSON, 0, len(st.Members)),
		now:          now,
	}
	for _, m := range st.Members {
		r.Members = append(r.Members, memberJSON{ID: m.ID, RaftAddress: m.RaftAddress, APIAddress: m.APIAddress, Suffrage: m.Suffrage, Leader: m.Leader})
	}
	return r
}

func (r *metaStatusResult) writeTable(w io.Writer) error {
	kv := newTable(w)
	kv.row("Member:", fmt.Sprintf("%s (%s)", r.ID, r.State))
	kv.row("Raft address:", orDash(r.RaftAddress))
	kv.row("API address:", orDash(r.APIAddress))
	leader := "none known"
	if r.Leader.ID != "" || r.Leader.RaftAddress != "" {
		leader = fmt.Sprintf("%s (raft %s, api %s)", orDash(r.Leader.ID), orDash(r.Leader.RaftAddress), orDash(r.Leader.APIAddress))
	}
	kv.row("Leader:", leader)
	kv.row("Term:", fmt.Sprint(r.Term))
	kv.row("Log index:", fmt.Sprintf("last %d, commit %d, applied %d", r.LastIndex, r.CommitIndex, r.AppliedIndex))
	if !r.LastContact.IsZero() {
		kv.row("Last contact:", formatAge(r.now, r.LastContact)+" (with the leader)")
	}
	kv.row("Map epoch:", fmt.Sprint(r.MapEpoch))
	if err := kv.flush(); err != nil {
		return err
	}
	if _, err := io.WriteString(w, "\n"); err != nil {
		return err
	}
	t := newTable(w, "ID", "RAFT ADDRESS", "API ADDRESS", "SUFFRAGE", "LEADER")
	for _, m := range r.Members {
		t.row(m.ID, orDash(m.RaftAddress), orDash(m.APIAddress), m.Suffrage, yesNo(m.Leader))
	}
	return t.flush()
}

func (o *metaStatusOptions) Run(ctx context.Context) error {
	return o.conn.withClient(ctx, func(cctx context.Context, c *metarpc.Client) error {
		st, err := c.MemberStatus(cctx)
		if err != nil {
			return o.conn.explain("read the member status", err)
		}
		r := statusToResult(st, time.Now())
		o.fillAPIAddresses(cctx, r)
		return newPrinter(o.conn.output, o.stdout).print(r)
	})
}

// fillAPIAddresses completes the API addresses the answering member does
// not know (members that never led and joined without --api-addr): each
// --meta address is asked, briefly and at the same time, which member it
// is. A member that answers with no address, or an unspecified one
// (0.0.0.0, ::), gets the address it was reached at.
func (o *metaStatusOptions) fillAPIAddresses(ctx context.Context, r *metaStatusResult) {
	missing := r.Leader.ID != "" && r.Leader.APIAddress == ""
	for _, m := range r.Members {
		missing = missing || m.APIAddress == ""
	}
	if !missing || len(o.conn.addrs) < 2 {
		return
	}
	var mu sync.Mutex
	found := make(map[string]string) // member ID -> API address
	var wg sync.WaitGroup
	for _, addr := range o.conn.addrs {
		wg.Go(func() {
			one := o.conn
			one.addrs, one.timeout = []string{addr}, min(o.conn.timeout, 2*time.Second)
			c, err := one.client()
			if err != nil {
				return
			}
			defer c.Close()
			cctx, cancel := one.callContext(ctx, 0)
			defer cancel()
			st, err := c.MemberStatus(cctx)
			if err != nil || st.ID == "" {
				return
			}
			api := st.APIAddress
			if host, _, err := net.SplitHostPort(api); err != nil || net.ParseIP(host).IsUnspecified() {
				api = addr
			}
			mu.Lock()
			found[st.ID] = api
			mu.Unlock()
		})
	}
	wg.Wait()
	for i := range r.Members {
		if r.Members[i].APIAddress == "" {
			r.Members[i].APIAddress = found[r.Members[i].ID]
		}
	}
	if r.Leader.APIAddress == "" {
		r.Leader.APIAddress = found[r.Leader.ID]
	}
}

// --- meta join and remove

// memberChangeResult is the output of meta join and meta remove.
type memberChangeResult struct {
	// Action is "joined" or "removed".
	Action      string `json:"action"`
	ID          string `json:"id"`
	RaftAddress string `json:"raft_address,omitempty"`
}

func (r *memberChangeResult) writeTable(w io.Writer) error {
	var err error
	if r.Action == "joined" {
		_, err = fmt.Fprintf(w, "Member %s (raft %s) is a voter of the meta cluster.\n", r.ID, r.RaftAddress)
	} else {
		_, err = fmt.Fprintf(w, "Member %s was removed from the meta cluster.\n", r.ID)
	}
	return err
}

type metaJoinOptions struct {
	conn     metaConnOptions
	id       string
	raftAddr string
	apiAddr  string
	stdout   io.Writer
}

func newMetaJoinCommand(stdout io.Writer) *cobra.Command {
	o := &metaJoinOptions{stdout: stdout}
	cmd := &cobra.Command{
		Use:   "join ID RAFT_ADDR",
		Short: "Add a member to the meta cluster as a voter",
		Long: `Add the member ID, whose Raft transport listens at RAFT_ADDR (host:port, as
the other members reach it), to the meta cluster as a voter. Start the new
member first ("pgshard meta run" without --bootstrap); the request goes to the
leader. Joining a member that is already there with that address does nothing.
--api-addr records the new member's API address (its --api-addr) at once, so
that "pgshard meta status" and redirects name it before it ever leads.`,
		Args:              usageArgs(cobra.ExactArgs(2)),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.conn.Complete(cmd)
			o.id, o.raftAddr = args[0], args[1]
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.conn.addFlags(cmd)
	cmd.Flags().StringVar(&o.apiAddr, "api-addr", "", "the new member's API address (host:port, as clients reach it), recorded at once")
	_ = cmd.RegisterFlagCompletionFunc("api-addr", cobra.NoFileCompletions)
	return cmd
}

// Validate checks the flags and arguments.
func (o *metaJoinOptions) Validate() error {
	if err := o.conn.Validate(); err != nil {
		return err
	}
	if strings.TrimSpace(o.id) == "" {
		return usageError{errors.New("meta join: ID is empty")}
	}
	if _, _, err := net.SplitHostPort(o.raftAddr); err != nil {
		return usageError{fmt.Errorf("meta join: RAFT_ADDR %q is not host:port: %w", o.raftAddr, err)}
	}
	if _, _, err := net.SplitHostPort(o.apiAddr); o.apiAddr != "" && err != nil {
		return usageError{fmt.Errorf("meta join: --api-addr %q is not host:port: %w", o.apiAddr, err)}
	}
	return nil
}

func (o *metaJoinOptions) Run(ctx context.Context) error {
	return o.conn.withClient(ctx, func(cctx context.Context, c *metarpc.Client) error {
		if err := c.JoinMemberAt(cctx, o.id, o.raftAddr, o.apiAddr); err != nil {
			return o.conn.explain("join member "+o.id, err)
		}
		return newPrinter(o.conn.output, o.stdout).print(&memberChangeResult{Action: "joined", ID: o.id, RaftAddress: o.raftAddr})
	})
}

type metaRemoveOptions struct {
	conn   metaConnOptions
	id     string
	stdout io.Writer
}

func newMetaRemoveCommand(stdout io.Writer) *cobra.Command {
	o := &metaRemoveOptions{stdout: stdout}
	cmd := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a member from the meta cluster",
		Long: `Remove the member ID from the meta cluster's Raft group. The request goes to
the leader. Keep a majority of the voters running: removing members of a
cluster that has lost its quorum is not possible this way.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.conn.Complete(cmd)
			o.id = args[0]
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.conn.addFlags(cmd)
	cmd.ValidArgsFunction = func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return o.conn.completeMemberIDs(cmd)
	}
	return cmd
}

// Validate checks the flags and arguments.
func (o *metaRemoveOptions) Validate() error {
	if err := o.conn.Validate(); err != nil {
		return err
	}
	if strings.TrimSpace(o.id) == "" {
		return usageError{errors.New("meta remove: ID is empty")}
	}
	return nil
}

func (o *metaRemoveOptions) Run(ctx context.Context) error {
	return o.conn.withClient(ctx, func(cctx context.Context, c *metarpc.Client) error {
		if err := c.RemoveMember(cctx, o.id); err != nil {
			return o.conn.explain("remove member "+o.id, err)
		}
		return newPrinter(o.conn.output, o.stdout).print(&memberChangeResult{Action: "removed", ID: o.id})
	})
}

// completionTimeout bounds the call a shell completion makes, so that a
// meta cluster that does not answer does not hang the shell.
const completionTimeout = 2 * time.Second

// completeMemberIDs completes member IDs from the cluster's status, with
// the connection flags given so far.
func (o *metaConnOptions) completeMemberIDs(cmd *cobra.Command) ([]string, cobra.ShellCompDirective) {
	o.Complete(cmd)
	if err := o.Validate(); err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	o.timeout = min(o.timeout, completionTimeout)
	c, err := o.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	defer c.Close()
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := o.callContext(ctx, 0)
	defer cancel()
	st, err := c.MemberStatus(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	ids := make([]string, 0, len(st.Members))
	for _, m := range st.Members {
		ids = append(ids, m.ID+"\t"+m.Suffrage+" at "+m.RaftAddress)
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}
