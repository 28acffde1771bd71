package proxy

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/wire"
)

// The console's PgBouncer-style commands beyond the SHOW verbs of
// console.go: SHOW SERVERS, USERS, DATABASES and LISTS; PAUSE, RESUME,
// RECONNECT, KILL, RELOAD and SHUTDOWN.
//
// PAUSE holds every statement that needs a new server connection (a new
// transaction, in transaction mode) of the shard — or of all shards —
// until RESUME, as failover buffering holds them, and returns once the
// server connections lent out have come back (within shutdown_timeout);
// then it closes the idle ones, so the servers see no pgshard session.
// Statements of transactions already open go on. RECONNECT closes idle
// server connections at once and the others when they are returned.

// consoleOpsHelp lists the commands of this file for SHOW HELP.
var consoleOpsHelp = [][]string{
	{"SHOW SERVERS", "every server connection: shard, server, user, database, state (active, idle), the client using it, server pid"},
	{"SHOW USERS", "every user: listed in users, or looked up with auth_query (cached); pool mode, clients"},
	{"SHOW DATABASES", "every shard: its primary, database, pool size, server connections, paused"},
	{"SHOW LISTS", "counts: clients, users, shards, pools, server connections, paused shards, rate-limited requests"},
	{"PAUSE [shard]", "hold new transactions (of one shard, or all) and wait for server connections to come back, then close them"},
	{"RESUME [shard]", "let held transactions run"},
	{"RECONNECT [shard]", "replace server connections: idle ones now, busy ones when returned"},
	{"KILL client_id", "end a client session (its id is in SHOW CLIENTS)"},
	{"RELOAD", "read the configuration file again (as SIGHUP)"},
	{"SHUTDOWN", "stop the proxy gracefully (as SIGTERM)"},
}

// opsState is the proxy's state for the console's commands, rate limits
// and auth_query.
type opsState struct {
	limits *rateLimiter
	auth   authCache

	anyPaused atomic.Bool // fast path of waitPaused
	mu        sync.Mutex
	pausedAll bool
	paused    map[string]bool // shard names
	resumed   chan struct{}   // closed at the next RESUME; under mu
	holding   atomic.Int64    // statements held by PAUSE now

	stopping sync.WaitGroup // the graceful shutdown SHUTDOWN started
}

// isPaused reports whether shard is paused. Callers hold o.mu.
func (o *opsState) isPaused(shard string) bool { return o.pausedAll || o.paused[shard] }

// waitPaused holds a statement that needs a server connection of pool p
// while its shard is paused, until RESUME (nil), the proxy shuts down
// (nil: the statement runs or fails on its way) or ctx ends.
func (s *Server) waitPaused(ctx context.Context, p *pool.Pool) error {
	if !s.ops.anyPaused.Load() {
		return nil
	}
	shard := s.poolShard(p)
	for {
		s.ops.mu.Lock()
		if !s.ops.isPaused(shard) || s.shuttingDown() {
			s.ops.mu.Unlock()
			return nil
		}
		if s.ops.resumed == nil {
			s.ops.resumed = make(chan struct{})
		}
		ch := s.ops.resumed
		s.ops.mu.Unlock()
		s.ops.holding.Add(1)
		select {
		case <-ch:
			s.ops.holding.Add(-1)
		case <-ctx.Done():
			s.ops.holding.Add(-1)
			return wire.Errorf(wire.SQLStateQueryCanceled, "canceling statement: shard %q is paused (admin console PAUSE)", shard)
		}
	}
}

// poolShard returns the shard of pool p ("" if it is no longer listed).
func (s *Server) poolShard(p *pool.Pool) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, q := range s.pools {
		if q == p {
			return k.shard
		}
	}
	return ""
}

// resumeAll lifts every pause (RESUME, and at shutdown).
func (s *Server) resumeAll() { s.setPaused("", false) }

// setPaused pauses or resumes shard ("": all shards).
func (s *Server) setPaused(shard string, on bool) {
	o := &s.ops
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case shard == "" && on:
		o.pausedAll = true
	case shard == "":
		o.pausedAll = false
		o.paused = nil
	case on:
		if o.paused == nil {
			o.paused = make(map[string]bool)
		}
		o.paused[shard] = true
	default:
		delete(o.paused, shard)
	}
	o.anyPaused.Store(o.pausedAll || len(o.paused) > 0)
	if !on && o.resumed != nil {
		close(o.resumed) // waiters look again
		o.resumed = nil
	}
}

// pausedShards lists the paused shards ("*" for all).
func (s *Server) pausedShards() []string {
	s.ops.mu.Lock()
	defer s.ops.mu.Unlock()
	if s.ops.pausedAll {
		return []string{"*"}
	}
	return slices.Sorted(maps.Keys(s.ops.paused))
}

// poolsOf returns the pools of shard ("": every pool).
func (s *Server) poolsOf(shard string) map[poolKey]*pool.Pool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[poolKey]*pool.Pool)
	for k, p := range s.pools {
		if shard == "" || k.shard == shard {
			out[k] = p
		}
	}
	return out
}

// lentOut counts the server connections of shard's pools lent out (or
// being opened).
func (s *Server) lentOut(shard string) int {
	n := 0
	for _, p := range s.poolsOf(shard) {
		st := p.Stats()
		n += st.Open - st.Idle
	}
	return n
}

// consoleOp answers the commands of this file; ok is false for others.
// cmd is the upper-cased command, sql the client's text.
func (s *session) consoleOp(cmd, sql string) (out []byte, err *wire.Error, ok bool) {
	verb, arg, _ := strings.Cut(cmd, " ")
	rawArg := ""
	if f := strings.Fields(strings.TrimRight(strings.TrimSpace(sql), "; \t\r\n")); len(f) == 2 {
		rawArg = strings.Trim(f[1], `"`) // shard names keep their case
	}
	srv := s.srv
	switch {
	case cmd == "SHOW SERVERS":
		out, err = appendResult(nil, []string{"type", "shard", "server", "role", "user", "database", "state", "client_id",
			"server_pid", "local_addr", "connect_time", "idle_since", "tls"}, srv.serverRows())
	case cmd == "SHOW USERS":
		out, err = appendResult(nil, []string{"name", "source", "auth", "pool_mode", "max_client_conn", "current_connections",
			"backend_user", "expires_in"}, srv.userRows())
	case cmd == "SHOW DATABASES":
		out, err = appendResult(nil, []string{"name", "host", "port", "database", "pool_size", "pool_mode", "current_connections",
			"in_use", "paused"}, srv.databaseRows())
	case cmd == "SHOW LISTS":
		out, err = appendResult(nil, []string{"list", "items"}, srv.listRows())
	case verb == "PAUSE" || verb == "RESUME" || verb == "RECONNECT":
		shard := ""
		if arg != "" {
			if shard, err = srv.consoleShard(rawArg); err != nil {
				return nil, err, true
			}
		}
		switch verb {
		case "PAUSE":
			err = srv.pause(shard)
		case "RESUME":
			srv.setPaused(shard, false)
		case "RECONNECT":
			n := 0
			for _, p := range srv.poolsOf(shard) {
				n += p.Reconnect()
			}
			s.log.Info("admin console RECONNECT", "shard", shard, "closed_idle", n)
		}
		if err == nil {
			out = wire.AppendString(nil, 'C', verb)
		}
	case verb == "KILL":
		id, perr := strconv.ParseUint(arg, 10, 32)
		if perr != nil {
			return nil, &wire.Error{Code: wire.SQLStateSyntaxError, Message: fmt.Sprintf("KILL needs a client id (SHOW CLIENTS), not %q", arg)}, true
		}
		if err = srv.kill(uint32(id)); err == nil {
			out = wire.AppendString(nil, 'C', "KILL")
		}
	case cmd == "RELOAD":
		if err = srv.consoleReload(); err == nil {
			out = wire.AppendString(nil, 'C', "RELOAD")
		}
	case cmd == "SHUTDOWN":
		srv.consoleShutdown()
		out = wire.AppendString(nil, 'C', "SHUTDOWN")
	default:
		return nil, nil, false
	}
	return out, err, true
}

// consoleShard resolves a shard named in a console command.
func (s *Server) consoleShard(name string) (string, *wire.Error) {
	for _, sc := range s.runtime().cfg.Shards {
		if sc.Name == name || strings.EqualFold(sc.Name, name) {
			return sc.Name, nil
		}
	}
	return "", &wire.Error{Code: wire.SQLStateInvalidParameterValue, Message: fmt.Sprintf("no shard %q", name),
		Hint: "SHOW DATABASES lists the shards."}
}

// pause pauses shard ("": all), waits up to shutdown_timeout for its
// server connections to come back and closes them.
func (s *Server) pause(shard string) *wire.Error {
	s.setPaused(shard, true)
	bound := s.runtime().cfg.ShutdownTimeout.D()
	deadline := time.Now().Add(bound)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.lentOut(shard) > 0 {
		if time.Now().After(deadline) || s.shuttingDown() {
			return &wire.Error{Code: wire.SQLStateObjectInUse,
				Message: fmt.Sprintf("PAUSE: %d server connections still in use after %s", s.lentOut(shard), bound),
				Detail:  "New transactions are held; open transactions (and pinned sessions) still run.",
				Hint:    "Wait and PAUSE again, KILL the clients that hold them (SHOW SERVERS), or RESUME."}
		}
		<-tick.C
	}
	for _, p := range s.poolsOf(shard) {
		p.Reconnect()
	}
	s.log.Info("admin console PAUSE: drained", "shard", shard)
	return nil
}

// kill ends the client session whose id (its BackendKeyData process id)
// is id, as pg_terminate_backend does.
func (s *Server) kill(id uint32) *wire.Error {
	s.mu.Lock()
	var victim *session
	for k, ss := range s.cancels {
		if k.pid == id {
			victim = ss
		}
	}
	s.mu.Unlock()
	if victim == nil {
		return &wire.Error{Code: wire.SQLStateInvalidParameterValue, Message: fmt.Sprintf("no client with id %d", id),
			Hint: "SHOW CLIENTS lists the clients and their ids."}
	}
	// One Write is atomic with respect to the relay's, so the error lands
	// between two of its messages; then the session ends on its next read.
	_ = victim.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = victim.conn.Write(wire.AppendErrorResponse(nil, wire.Fatalf(wire.SQLStateAdminShutdown, "terminating connection due to administrator command")))
	_ = victim.conn.Close()
	s.kickSession(victim)
	s.log.Info("admin console KILL", "client_id", id, "user", victim.user.cfg.Name)
	return nil
}

// consoleReload reads the configuration again through Config.ReloadFunc.
func (s *Server) consoleReload() *wire.Error {
	load := s.runtime().cfg.ReloadFunc
	if load == nil {
		return wire.Errorf(wire.SQLStateFeatureNotSupported, "RELOAD: this proxy was not started from a configuration file")
	}
	cfg, err := load()
	if err == nil {
		err = s.Reload(cfg)
	}
	if err != nil {
		s.log.Error("reload failed; keeping the old configuration", "err", err)
		return &wire.Error{Code: wire.SQLStateConfigFileError, Message: fmt.Sprintf("RELOAD failed; the old configuration stays: %v", err)}
	}
	return nil
}

// consoleShutdown starts a graceful shutdown (bounded by
// shutdown_timeout); the console session ends after its answer.
func (s *Server) consoleShutdown() {
	s.log.Info("admin console SHUTDOWN")
	timeout := s.runtime().cfg.ShutdownTimeout.D()
	s.ops.stopping.Add(1)
	go func() {
		defer s.ops.stopping.Done()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_ = s.Shutdown(ctx)
	}()
	// Shutdown wakes idle sessions, the console among them, to end them.
}

// WaitShutdown waits for a shutdown the console's SHUTDOWN started.
func (s *Server) WaitShutdown() { s.ops.stopping.Wait() }

// serverRows describes every server connection.
func (s *Server) serverRows() [][]string {
	clients := map[string]string{} // "addr/pid" -> client id
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	for _, ss := range sessions {
		ss.mu.Lock()
		for _, a := range ss.st.atts {
			clients[a.conn.Addr+"/"+utoa(uint64(a.conn.PID))] = utoa(uint64(ss.key.pid))
		}
		ss.mu.Unlock()
	}
	primaries := map[string]string{}
	for _, sc := range s.runtime().cfg.Shards {
		primaries[sc.Name] = sc.address()
	}
	var rows [][]string
	for k, p := range s.poolsOf("") {
		role := "replica"
		if primaries[k.shard] == k.addr {
			role = "primary"
		}
		for _, c := range p.Conns() {
			state, since := "active", ""
			if c.Idle {
				state, since = "idle", c.Returned.UTC().Format(time.RFC3339)
			}
			rows = append(rows, []string{"S", k.shard, k.addr, role, k.user, k.db, state, clients[k.addr+"/"+utoa(uint64(c.PID))],
				utoa(uint64(c.PID)), c.LocalAddr, c.Created.UTC().Format(time.RFC3339), since, strconv.FormatBool(c.TLS)})
		}
	}
	sortRows(rows)
	return rows
}

// userRows describes the listed users and those auth_query found.
func (s *Server) userRows() [][]string {
	rt := s.runtime()
	var rows [][]string
	for _, u := range rt.users {
		mode := string(rt.cfg.PoolMode)
		if u.cfg.PoolMode != "" {
			mode = string(u.cfg.PoolMode)
		}
		rows = append(rows, []string{u.cfg.Name, "users", string(u.method), mode, itoa(u.cfg.MaxClientConn),
			strconv.FormatInt(u.clients.Load(), 10), u.beUser, ""})
	}
	for _, e := range s.ops.auth.entries() {
		if _, listed := rt.users[e.name]; listed {
			continue
		}
		method := "scram-sha-256"
		switch {
		case !e.found:
			method = "(unknown role)"
		case e.cred.SCRAM == nil:
			method = "md5"
		}
		beUser := e.name // auth_query roles log in to the servers as themselves
		rows = append(rows, []string{e.name, "auth_query", method, string(rt.cfg.PoolMode), "0",
			strconv.FormatInt(s.sessionsOf(e.name), 10), beUser, time.Until(e.expires).Round(time.Second).String()})
	}
	sortRows(rows)
	return rows
}

// sessionsOf counts the client sessions of user.
func (s *Server) sessionsOf(user string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for ss := range s.sessions {
		if ss.user.cfg.Name == user {
			n++
		}
	}
	return n
}

// databaseRows describes every shard as PgBouncer describes databases.
func (s *Server) databaseRows() [][]string {
	rt := s.runtime()
	paused := s.pausedShards()
	var rows [][]string
	for _, sc := range rt.cfg.Shards {
		open, busy := 0, 0
		for _, p := range s.poolsOf(sc.Name) {
			st := p.Stats()
			open += st.Open
			busy += st.Open - st.Idle
		}
		db := sc.Database
		if db == "" {
			db = "(the client's)"
		}
		isPaused := slices.Contains(paused, "*") || slices.Contains(paused, sc.Name)
		rows = append(rows, []string{sc.Name, sc.Host, itoa(sc.Port), db, itoa(rt.cfg.Pool.Size), string(rt.cfg.PoolMode),
			itoa(open), itoa(busy), strconv.FormatBool(isPaused)})
	}
	return rows
}

// listRows counts what the proxy holds, as PgBouncer's SHOW LISTS.
func (s *Server) listRows() [][]string {
	rt := s.runtime()
	s.mu.Lock()
	clients, pools := len(s.sessions), len(s.pools)
	s.mu.Unlock()
	servers, idle := 0, 0
	for _, p := range s.poolsOf("") {
		st := p.Stats()
		servers += st.Open
		idle += st.Idle
	}
	rows := [][]string{
		{"clients", itoa(clients)},
		{"users", itoa(len(rt.users))},
		{"auth_query_users", itoa(len(s.ops.auth.entries()))},
		{"shards", itoa(len(rt.cfg.Shards))},
		{"pools", itoa(pools)},
		{"servers", itoa(servers)},
		{"servers_idle", itoa(idle)},
		{"servers_in_use", itoa(servers - idle)},
		{"paused_shards", strings.Join(s.pausedShards(), ",")},
		{"held_by_pause", strconv.FormatInt(s.ops.holding.Load(), 10)},
	}
	for _, n := range limitNames {
		rows = append(rows, []string{"rate_limited_" + n, strconv.FormatFloat(counterValue(s.ops.limits.refused.WithLabelValues(n)), 'f', -1, 64)})
	}
	return rows
}

// counterValue reads a counter (for the console).
func counterValue(c prometheus.Counter) float64 {
	var d dto.Metric
	if err := c.Write(&d); err != nil || d.Counter == nil {
		return 0
	}
	return d.Counter.GetValue()
}

// opsConfigRows are SHOW CONFIG's rows for auth_query and rate limits
// (never the auth password).
func opsConfigRows(c *Config) [][]string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	rows := [][]string{{"auth_query.user", c.AuthQuery.User}}
	if c.AuthQuery.User != "" {
		rows = append(rows, []string{"auth_query.query", c.AuthQuery.Query}, []string{"auth_query.database", c.AuthQuery.Database},
			[]string{"auth_query.cache_ttl", c.AuthQuery.CacheTTL.D().String()})
	}
	for _, l := range []struct {
		name string
		r    RateLimit
	}{{"rate_limits.per_user", c.RateLimits.PerUser}, {"rate_limits.per_address", c.RateLimits.PerAddress}} {
		rows = append(rows, []string{l.name + ".statements_per_second", f(l.r.StatementsPerSecond)},
			[]string{l.name + ".statement_burst", itoa(l.r.StatementBurst)},
			[]string{l.name + ".connections_per_second", f(l.r.ConnectionsPerSecond)},
			[]string{l.name + ".connection_burst", itoa(l.r.ConnectionBurst)})
	}
	return rows
}
