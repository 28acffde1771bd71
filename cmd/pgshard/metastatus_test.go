package main

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/shardmap/meta"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// realMember is a meta member in this process: a Raft node and its API on
// 127.0.0.1, without authentication (loopback).
type realMember struct {
	node *meta.Node
	api  string
}

func startRealMember(t *testing.T, id string, bootstrap bool) *realMember {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	node, err := meta.Open(t.Context(), meta.Config{
		ID: id, RaftAddr: "127.0.0.1:0", APIAddr: lis.Addr().String(), DataDir: t.TempDir(), Bootstrap: bootstrap,
		Logger:           slog.New(slog.DiscardHandler),
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond, LeaderLeaseTimeout: 150 * time.Millisecond,
	})
	if err != nil {
		lis.Close()
		t.Fatal(err)
	}
	srv, err := metarpc.NewServer(metarpc.NodeStore(node), metarpc.ServerOptions{AllowUnauthenticated: true})
	if err != nil {
		lis.Close()
		node.Close()
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		<-served
		if err := node.Close(); err != nil {
			t.Errorf("close %s: %v", id, err)
		}
	})
	return &realMember{node: node, api: lis.Addr().String()}
}

// memberAPIAddresses reads the members table of meta status: ID -> API
// ADDRESS.
func memberAPIAddresses(t *testing.T, out string) map[string]string {
	t.Helper()
	parts := strings.SplitN(out, "ID ", 2)
	if len(parts) != 2 {
		t.Fatalf("no members table:\n%s", out)
	}
	got := make(map[string]string)
	for _, l := range strings.Split(strings.TrimSpace(parts[1]), "\n")[1:] {
		if f := strings.Fields(l); len(f) == 5 {
			got[f[0]] = f[2]
		}
	}
	return got
}

// TestMetaStatusAPIAddresses: with real members, meta status names the
// API address of members that never led: the one meta join --api-addr
// recorded, and — for a member joined without it — the one the member
// itself gives when one of several --meta addresses reaches it.
func TestMetaStatusAPIAddresses(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	m1 := startRealMember(t, "m1", true)
	if err := m1.node.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	m2 := startRealMember(t, "m2", false)
	m3 := startRealMember(t, "m3", false)
	cli := func(args ...string) ctlResult {
		return runCtl(t, nil, append(args, "--timeout", "5s")...)
	}
	cli("meta", "join", "m2", m2.node.Addr(), "--api-addr", m2.api, "--meta", m1.api).want(t, exitOK)
	cli("meta", "join", "m3", m3.node.Addr(), "--meta", m1.api).want(t, exitOK)
	cli("meta", "join", "m4", "127.0.0.1:1", "--api-addr", "nowhere", "--meta", m1.api).want(t, exitUsage)

	var r ctlResult
	waitUntil(t, ctx, "m1 to lead with m2 and m3 joined", func() (bool, string) {
		r = cli("meta", "status", "--meta", m1.api)
		return r.code == exitOK && strings.Contains(r.stdout, "m3 ") && strings.Contains(r.stdout, "(leader)"), r.stdout + r.stderr
	})
	got := memberAPIAddresses(t, r.stdout)
	if got["m1"] != m1.api || got["m2"] != m2.api || got["m3"] != "-" {
		t.Errorf("API addresses with one --meta address: %v; want m1 %s, m2 %s (recorded at join), m3 unknown\n%s",
			got, m1.api, m2.api, r.stdout)
	}
	r = cli("meta", "status", "--meta", strings.Join([]string{m1.api, m2.api, m3.api}, ",")).want(t, exitOK)
	got = memberAPIAddresses(t, r.stdout)
	if got["m1"] != m1.api || got["m2"] != m2.api || got["m3"] != m3.api {
		t.Errorf("API addresses with every --meta address: %v; want m1 %s, m2 %s, m3 %s\n%s", got, m1.api, m2.api, m3.api, r.stdout)
	}
}
