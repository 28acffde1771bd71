package failovertest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap"
)

// availabilityTarget is how soon writes to a shard whose primary died
// must flow again.
const availabilityTarget = 5 * time.Second

// failover kills shard's primary under load and checks what the issue
// asks: writes to it flow again within availabilityTarget, the other
// shard never stops, the map names a replica as primary and fences the
// old one. It returns the new map and the kill time.
func failover(t *testing.T, e *env, l *load, shard int) (*shardmap.Map, time.Time) {
	t.Helper()
	name := fmt.Sprintf("s%d", shard)
	old := e.pg.Shards[shard]
	l.waitAcks(t, shard, 50, 20*time.Second)
	l.waitAcks(t, 1-shard, 50, 20*time.Second)
	killed := time.Now()
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	m := e.waitMap(t, 30*time.Second, "failover of "+name, func(m *shardmap.Map) bool {
		sh := m.Shard(name)
		return sh.Switch == nil && sh.Primary.String() != old.Addr()
	})
	committed := time.Since(killed)
	l.waitAcks(t, shard, 20, 20*time.Second)
	time.Sleep(500 * time.Millisecond) // more load on the new primary
	gap, gapAt := l.maxGap(shard, killed.Add(-time.Second))
	otherGap, otherAt := l.maxGap(1-shard, killed.Add(-time.Second))
	t.Logf("%s: primary %s killed; new map (epoch %d, primary %s) committed after %s; longest write gap on %s %s (from %s after the kill); longest on the other shard %s (from %s after the kill)",
		name, old.Addr(), m.Epoch, m.Shard(name).Primary, committed.Round(time.Millisecond), name,
		gap.Round(time.Millisecond), gapAt.Sub(killed).Round(time.Millisecond), otherGap.Round(time.Millisecond), otherAt.Sub(killed).Round(time.Millisecond))
	if gap > availabilityTarget {
		t.Errorf("%s: writes stopped for %s, want under %s", name, gap.Round(time.Millisecond), availabilityTarget)
	}
	if otherGap > time.Second {
		t.Errorf("the other shard's writes stopped for %s during the failover", otherGap.Round(time.Millisecond))
	}
	// Writes in flight on the dead primary fail with 08006 (retry);
	// everything else waited for the new primary.
	l.mu.Lock()
	for _, le := range l.errs {
		if le.at.After(killed) && (le.shard != shard || le.code != "08006") {
			t.Errorf("client error during the failover of %s (want only 08006 on %s): s%d %v", name, name, le.shard, le.err)
		}
	}
	l.mu.Unlock()
	sh := m.Shard(name)
	if !containsEndpoint(sh.Fenced, old.Addr()) || containsEndpoint(sh.Replicas, old.Addr()) {
		t.Errorf("%s: the old primary %s is not fenced: %+v", name, old.Addr(), sh)
	}
	newPrimary := sh.Primary.String()
	if newPrimary != old.Replicas[0].Addr() && newPrimary != old.Replicas[1].Addr() {
		t.Errorf("%s: new primary %s is not one of the replicas", name, newPrimary)
	}
	// The other replica was re-pointed: it streams from the new primary.
	for _, r := range old.Replicas {
		if r.Addr() == newPrimary {
			continue
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		v, err := r.QueryValue(ctx, "SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'")
		cancel()
		if err != nil || v != newPrimary {
			t.Errorf("%s: replica %s streams from %q (%v), want the new primary %s", name, r.Addr(), v, err, newPrimary)
		}
	}
	return m, killed
}

func containsEndpoint(es []shardmap.Endpoint, addr string) bool {
	for _, e := range es {
		if e.String() == addr {
			return true
		}
	}
	return false
}

// TestFailoverAsync: asynchronous replication. Kill -9 of s0's primary
// under load: writes to s0 flow again within 5 s, s1 never stops, the
// acknowledged writes that did not reach the new primary (the loss window
// of asynchronous replication) are counted and reported, the old primary
// restarted gets no traffic. Then a planned switchover of s1 under load:
// no client error at all, no acknowledged write lost.
func TestFailoverAsync(t *testing.T) {
	// Commits are flushed locally (the harness's default is off), so what
	// is lost is only what replication had not shipped.
	e := setup(t, map[string]string{"synchronous_commit": "on"})
	l := e.startLoad(t, 2)
	m, killed := failover(t, e, l, 0)

	shardsList(t, e, "s0", e.pg.Shards[0].Addr())

	// The old primary comes back: it must get nothing.
	old := e.pg.Shards[0]
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := old.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	before, err := old.QueryValue(ctx, "SELECT count(*) FROM acct")
	if err != nil {
		t.Fatal(err)
	}
	l.waitAcks(t, 0, 100, 20*time.Second)
	after, err := old.QueryValue(ctx, "SELECT count(*) FROM acct")
	if err != nil {
		t.Fatal(err)
	}
	// The meta members probe it and keep it fenced (application_name
	// pgshard-health, pgshard-admin): no other session may be there.
	others, err := old.QueryValue(ctx, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name NOT IN ('pgshard-health', 'pgshard-admin')")
	if err != nil {
		t.Fatal(err)
	}
	if before != after || others != "0" {
		t.Errorf("the restarted old primary got traffic: rows %s then %s, %s other sessions", before, after, others)
	}

	rejoin(t, e, 0, old)

	// Planned switchover of s1 under the same load: no error, nothing lost.
	errsBefore := len(l.errorSummary())
	_ = errsBefore
	l.mu.Lock()
	nErrs := len(l.errs)
	l.mu.Unlock()
	start := time.Now()
	cmd := exec.CommandContext(ctx, pgshardBin, "failover", "--shard", "s1", "--meta", strings.Join(e.meta.Addrs(), ","), "--timeout", "60s")
	cmd.Env = append(os.Environ(), "PGSHARD_META_TOKEN="+e.meta.Token)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pgshard failover: %v\n%s", err, out)
	}
	took := time.Since(start)
	l.waitAcks(t, 1, 50, 20*time.Second)
	l.stop()
	l.mu.Lock()
	switchErrs := l.errs[nErrs:]
	l.mu.Unlock()
	m2 := e.currentMap(t)
	t.Logf("switchover of s1: %s (%s); primary now %s", strings.TrimSpace(string(out)), took.Round(time.Millisecond), m2.Shard("s1").Primary)
	if len(switchErrs) > 0 {
		for _, se := range switchErrs[:min(5, len(switchErrs))] {
			t.Errorf("client error during the switchover: %v", se.err)
		}
	}
	if m2.Shard("s1").Primary.String() == e.pg.Shards[1].Addr() {
		t.Errorf("s1's primary did not change")
	}

	acked, missing := l.verify(t, m2)
	t.Logf("load: %d writes, %d reads, %d acknowledged; errors by shard and SQLSTATE: %v", l.writes, l.reads, acked, l.errorSummary())
	t.Logf("asynchronous replication: %d acknowledged writes missing after the failover of s0 (killed at %s)", missing, killed.Format("15:04:05.000"))
	for _, s := range l.firstErrors(5) {
		t.Log(s)
	}
	_ = m
}

// TestFailoverSync: with synchronous replication (ANY 1 of the replicas)
// the same kill -9 loses no acknowledged write.
func TestFailoverSync(t *testing.T) {
	e := setup(t, map[string]string{
		"synchronous_commit":        "on",
		"synchronous_standby_names": "'ANY 1 (*)'",
	})
	l := e.startLoad(t, 2)
	readsOnReplicas(t, e)
	failover(t, e, l, 1)
	l.stop()
	acked, missing := l.verify(t, e.currentMap(t))
	t.Logf("load: %d writes, %d reads, %d acknowledged; errors by shard and SQLSTATE: %v", l.writes, l.reads, acked, l.errorSummary())
	if missing != 0 {
		t.Errorf("synchronous replication: %d of %d acknowledged writes lost", missing, acked)
	}
}

// rejoin stops the fenced old primary of shard, runs pgshard shards rejoin
// on its data directory, starts it when the command says so, and checks
// that it streams from the new primary and is a replica in the map again.
func rejoin(t *testing.T, e *env, shard int, old *pgcluster.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := old.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("s%d", shard)
	cmd := exec.CommandContext(ctx, pgshardBin, "shards", "rejoin", "--shard", name, "--endpoint", old.Addr(),
		"--data-dir", old.DataDir, "--pg-user", pgcluster.SuperuserName, "--pg-sslmode", "disable", "--wait", "60s",
		"--meta", strings.Join(e.meta.Addrs(), ","))
	cmd.Env = append(os.Environ(), "PGSHARD_META_TOKEN="+e.meta.Token, "PGSHARD_META_PG_PASSWORD="+pgcluster.SuperuserPassword)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out []string
	lines := bufio.NewScanner(stdout)
	started := false
	for lines.Scan() {
		out = append(out, lines.Text())
		if !started && strings.Contains(lines.Text(), "Start the server now") {
			started = true
			if err := old.Restart(ctx); err != nil {
				t.Fatalf("start the rebuilt server: %v", err)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("pgshard shards rejoin: %v\n%s\n%s", err, strings.Join(out, "\n"), stderr.String())
	}
	t.Logf("rejoin of %s (%s): %s", old.Addr(), time.Since(start).Round(time.Millisecond), strings.Join(out, " | "))
	m := e.currentMap(t)
	sh := m.Shard(name)
	if containsEndpoint(sh.Fenced, old.Addr()) || !containsEndpoint(sh.Replicas, old.Addr()) {
		t.Fatalf("after rejoin %s is not a replica of %s: %+v", old.Addr(), name, sh)
	}
	if v, err := old.QueryValue(ctx, "SELECT pg_is_in_recovery()"); err != nil || v != "t" {
		t.Fatalf("the re-joined server is not in recovery: %q %v", v, err)
	}
}

// TestFailoverResumesOnNewLeader: the meta leader dies in the middle of a
// failover (the switch is committed at step "fence" and waits for a proxy
// that does not acknowledge it); the next leader resumes the workflow
// from the map and finishes it.
func TestFailoverResumesOnNewLeader(t *testing.T) {
	e := setup(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	// A proxy that stays at epoch 1: the switch waits for its lease.
	hbCtx, stopHB := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		for hbCtx.Err() == nil {
			_, _ = e.client.ProxyHeartbeat(hbCtx, "stuck", "127.0.0.1:1", 1, nil)
			select {
			case <-hbCtx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	defer func() { stopHB(); <-hbDone }()
	for registered := false; !registered; {
		ps, err := e.client.ListProxies(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			registered = registered || p.ID == "stuck"
		}
		time.Sleep(20 * time.Millisecond)
	}

	old := e.pg.Shards[0]
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	e.waitMap(t, 30*time.Second, "the switch of s0 at step fence", func(m *shardmap.Map) bool {
		sw := m.Shard("s0").Switch
		return sw != nil && sw.Step == "fence"
	})
	leader, err := e.meta.WaitLeader(ctx, e.meta.Members...)
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	stopHB()
	<-hbDone
	killedLeader := time.Now()
	m := e.waitMap(t, 60*time.Second, "the failover of s0 finished by the next leader", func(m *shardmap.Map) bool {
		sh := m.Shard("s0")
		return sh.Switch == nil && sh.Primary.String() != old.Addr()
	})
	next, err := e.meta.WaitLeader(ctx, e.meta.Others(leader)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("leader %s killed mid-failover; %s finished it %s later (epoch %d, primary %s)", leader.ID, next.ID,
		time.Since(killedLeader).Round(time.Millisecond), m.Epoch, m.Shard("s0").Primary)
	if !containsEndpoint(m.Shard("s0").Fenced, old.Addr()) {
		t.Errorf("old primary not fenced: %+v", m.Shard("s0"))
	}
	// Writes to s0 work through both proxies.
	for _, px := range e.proxies {
		c, err := dial(ctx, px)
		if err != nil {
			t.Fatal(err)
		}
		for id := int64(1); id < 50; id++ {
			if s, _ := e.dist.ShardForInt64(id); s == "s0" {
				if _, err := c.Exec(ctx, "INSERT INTO acct (id, writer) VALUES ($1, 0) ON CONFLICT (id) DO NOTHING", id); err != nil {
					t.Fatalf("write to s0 after the failover: %v", err)
				}
			}
		}
		_ = c.Close(ctx)
	}
}

// readsOnReplicas checks that a read over both shards, by a session that
// wrote nothing, runs on a replica of each.
func readsOnReplicas(t *testing.T, e *env) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, err := dial(ctx, e.proxies[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	// Which server ran the read is told by its statistics: only this
	// read scans acct sequentially (the load's reads look up the primary
	// key, its writes scan nothing). The proxy reads from replicas once
	// its probes have seen them; statistics reach the view within a
	// second or so.
	seqScans := func(s *pgcluster.Server) int {
		v, err := s.QueryValue(ctx, "SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_user_tables WHERE relname = 'acct'")
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	replicaScans := func(p *pgcluster.Server) int {
		n := 0
		for _, r := range p.Replicas {
			n += seqScans(r)
		}
		return n
	}
	read := func() {
		var n int64
		if err := c.QueryRow(ctx, "SELECT count(*) FROM acct WHERE writer = -42").Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	// Until the probes have seen the replicas a read may go to the
	// primaries: wait until both shards' replicas take them.
	deadline := time.Now().Add(15 * time.Second)
	for replicaScans(e.pg.Shards[0]) == 0 || replicaScans(e.pg.Shards[1]) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a read over both shards never ran on a replica of each (scans on s0's replicas %d, s1's %d)",
				replicaScans(e.pg.Shards[0]), replicaScans(e.pg.Shards[1]))
		}
		read()
		time.Sleep(100 * time.Millisecond)
	}
	// From then on every such read runs on a replica of each shard and
	// none on a primary.
	const reads = 20
	var primaries, replicas [2]int
	for i, p := range e.pg.Shards {
		primaries[i], replicas[i] = seqScans(p), replicaScans(p)
	}
	for range reads {
		read()
	}
	deadline = time.Now().Add(15 * time.Second)
	for i, p := range e.pg.Shards {
		for replicaScans(p) < replicas[i]+reads {
			if time.Now().After(deadline) {
				t.Fatalf("s%d: %d of %d reads over both shards ran on its replicas", i, replicaScans(p)-replicas[i], reads)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if k := seqScans(p); k != primaries[i] {
			t.Errorf("s%d: %d of %d reads over both shards ran on the primary", i, k-primaries[i], reads)
		}
	}
}

// shardsList runs pgshard shards list -o json and checks what it says of
// shard after a failover: fenced is the old primary, and the new primary
// and the replica that remains are up (the meta leader's health monitor).
func shardsList(t *testing.T, e *env, shard, fenced string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var got struct {
		Shards []struct {
			Name      string   `json:"name"`
			Primary   string   `json:"primary"`
			Fenced    []string `json:"fenced"`
			Endpoints []struct {
				Address string `json:"address"`
				Role    string `json:"role"`
				State   string `json:"state"`
			} `json:"endpoints"`
		} `json:"shards"`
	}
	var out []byte
	deadline := time.Now().Add(10 * time.Second)
	for {
		cmd := exec.CommandContext(ctx, pgshardBin, "shards", "list", "-o", "json", "--meta", strings.Join(e.meta.Addrs(), ","))
		cmd.Env = append(os.Environ(), "PGSHARD_META_TOKEN="+e.meta.Token)
		var err error
		if out, err = cmd.Output(); err != nil {
			t.Fatalf("pgshard shards list: %v\n%s", err, out)
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("shards list JSON: %v\n%s", err, out)
		}
		up := 0
		for _, s := range got.Shards {
			if s.Name != shard {
				continue
			}
			if len(s.Fenced) != 1 || s.Fenced[0] != fenced {
				t.Fatalf("shards list: %s fenced %v, want [%s]", shard, s.Fenced, fenced)
			}
			for _, ep := range s.Endpoints {
				if ep.Role != "fenced" && ep.State == "up" {
					up++
				}
			}
		}
		if up == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("shards list does not show %s's primary and replica up:\n%s", shard, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReplicaDownDuringFailover: a replica that was down while its
// primary failed over comes back still configured for the dead primary;
// the meta leader notices it does not stream and repoints it at the new
// primary, which it then follows.
func TestReplicaDownDuringFailover(t *testing.T) {
	e := setup(t, map[string]string{"synchronous_commit": "on"})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	old := e.pg.Shards[0]
	late, other := old.Replicas[1], old.Replicas[0]
	if err := late.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	m := e.waitMap(t, 30*time.Second, "the failover of s0 to the replica that is up", func(m *shardmap.Map) bool {
		sh := m.Shard("s0")
		return sh.Switch == nil && sh.Primary.String() == other.Addr()
	})
	if !containsEndpoint(m.Shard("s0").Replicas, late.Addr()) {
		t.Fatalf("the replica that was down left the map: %+v", m.Shard("s0"))
	}
	restarted := time.Now()
	if err := late.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(40 * time.Second)
	for {
		v, err := late.QueryValue(ctx, "SELECT coalesce((SELECT sender_host || ':' || sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'), '')")
		if err == nil && v == other.Addr() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica that was down does not stream from the new primary %s (%q, %v)", other.Addr(), v, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("replica %s streams from the new primary %s %s after it came back", late.Addr(), other.Addr(), time.Since(restarted).Round(time.Millisecond))
	// And it has what was written on the new primary.
	if err := other.Exec(ctx, "INSERT INTO acct (id, writer) VALUES (-1, 0)"); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		if v, err := late.QueryValue(ctx, "SELECT count(*) FROM acct WHERE id = -1"); err == nil && v == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the repointed replica does not replay the new primary's writes")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
