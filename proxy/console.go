package proxy

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	dto "github.com/prometheus/client_model/go"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/wire"
)

// The admin console: a virtual database, "pgshard", that users named in
// admin_users can connect to with any PostgreSQL client (psql -d pgshard)
// to look at the proxy itself, as with PgBouncer's console. It answers
// simple queries only, and only the SHOW commands in consoleHelp; no
// server connection is involved.

// ConsoleDatabase is the database name of the admin console.
const ConsoleDatabase = "pgshard"

// consoleHelp lists the console's commands and what they show.
var consoleHelp = [][]string{
	{"SHOW HELP", "this list"},
	{"SHOW POOLS", "every server connection pool: shard, server, role, user, database, connections open, idle, in use, waiting clients, totals"},
	{"SHOW CLIENTS", "every client session: user, database, address, state, the server it holds, its id (for KILL)"},
	{"SHOW SHARDS", "every server of the shard map: shard, role, address, state (up, down, lag)"},
	{"SHOW STATS", "totals since start: clients, queries, transactions, buffered statements, errors"},
	{"SHOW CONFIG", "the settings that matter for operations (no secrets)"},
}

// consoleParams are the ParameterStatus values the console reports.
var consoleParams = [][2]string{
	{"server_version", "15.0 (pgshard admin console)"},
	{"server_encoding", "UTF8"},
	{"client_encoding", "UTF8"},
	{"DateStyle", "ISO, MDY"},
	{"integer_datetimes", "on"},
	{"standard_conforming_strings", "on"},
}

// isAdmin reports whether the user may use the admin console.
func (s *Server) isAdmin(user string) bool {
	return slices.Contains(s.runtime().cfg.AdminUsers, user)
}

// serveConsole runs an admin console session until the client leaves.
func (s *session) serveConsole(ctx context.Context) {
	defer s.finish()
	refused := false // an extended-protocol message was refused since the last Sync
	for {
		typ, frame, err := s.in.Next()
		if err != nil {
			return
		}
		var out []byte
		switch typ {
		case 'Q':
			out = s.consoleQuery(cstringView(frame[wire.HeaderLen:]))
		case 'X':
			return
		case 'S':
			refused = false
			out = wire.AppendReadyForQuery(nil, 'I')
		case 'P', 'B', 'D', 'E', 'C', 'H', 'F':
			// One error up to the client's Sync, as a server skips the
			// rest of a failed pipeline; a FunctionCall is its own sync
			// point.
			if !refused && typ != 'H' {
				out = wire.AppendErrorResponse(nil, wire.Errorf(wire.SQLStateFeatureNotSupported,
					"the pgshard admin console answers simple queries only (psql, or pgx's simple protocol)"))
				refused = true
			}
			if typ == 'F' {
				refused = false
				out = wire.AppendReadyForQuery(out, 'I')
			}
		default:
			_, _ = s.conn.Write(wire.AppendErrorResponse(nil, wire.Fatalf(wire.SQLStateProtocolViolation, "invalid frontend message type %d", typ)))
			return
		}
		if len(out) > 0 {
			if _, err := s.conn.Write(out); err != nil {
				return
			}
		}
		if ctx.Err() != nil || s.srv.shuttingDown() {
			return
		}
	}
}

// consoleQuery answers one simple query of the console.
func (s *session) consoleQuery(sql string) []byte {
	cmd := strings.Join(strings.Fields(strings.ToUpper(strings.TrimRight(strings.TrimSpace(sql), "; \t\r\n"))), " ")
	var out []byte
	var err *wire.Error
	switch cmd {
	case "":
		out = append(out, 'I', 0, 0, 0, 4) // EmptyQueryResponse
	case "SHOW HELP":
		out, err = appendResult(out, []string{"command", "shows"}, append(slices.Clone(consoleHelp), consoleOpsHelp...))
	case "SHOW POOLS":
		out, err = appendResult(out, []string{"shard", "server", "role", "user", "database", "size", "open", "idle", "in_use", "waiting",
			"acquired", "waits", "wait_seconds", "timeouts", "dials", "dial_failures"}, s.srv.poolRows())
	case "SHOW CLIENTS":
		out, err = appendResult(out, []string{"user", "database", "address", "state", "shard", "server", "transaction", "id"}, s.srv.clientRows())
	case "SHOW SHARDS":
		out, err = appendResult(out, []string{"shard", "role", "address", "state", "map_epoch"}, s.srv.shardRows())
	case "SHOW STATS":
		out, err = appendResult(out, []string{"stat", "value"}, s.srv.statRows())
	case "SHOW CONFIG":
		out, err = appendResult(out, []string{"key", "value"}, s.srv.configRows())
	default:
		var ok bool
		if out, err, ok = s.consoleOp(cmd, sql); !ok {
			out, err, ok = s.srv.cacheConsole(out, cmd)
		}
		if !ok {
			err = &wire.Error{Code: wire.SQLStateSyntaxError, Message: fmt.Sprintf("unknown admin console command %q", strings.TrimSpace(sql)),
				Hint: "SHOW HELP lists the commands."}
		}
	}
	if err != nil {
		out = wire.AppendErrorResponse(out[:0], err)
	} else {
		s.log.Debug("admin console", "command", cmd)
	}
	return wire.AppendReadyForQuery(out, 'I')
}

// appendResult appends a text result set and its CommandComplete.
func appendResult(out []byte, cols []string, rows [][]string) ([]byte, *wire.Error) {
	rd := pgproto3.RowDescription{}
	for _, c := range cols {
		rd.Fields = append(rd.Fields, pgproto3.FieldDescription{Name: []byte(c), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1})
	}
	out, err := rd.Encode(out)
	if err != nil {
		return out, wire.Errorf(wire.SQLStateInternalError, "encode the result: %v", err)
	}
	for _, r := range rows {
		dr := pgproto3.DataRow{Values: make([][]byte, len(r))}
		for i, v := range r {
			dr.Values[i] = []byte(v)
		}
		if out, err = dr.Encode(out); err != nil {
			return out, wire.Errorf(wire.SQLStateInternalError, "encode the result: %v", err)
		}
	}
	return wire.AppendString(out, 'C', "SHOW "+strconv.Itoa(len(rows))), nil
}

// poolRows describes every pool.
func (s *Server) poolRows() [][]string {
	rt := s.runtime()
	primaries := map[string]string{}
	for _, sc := range rt.cfg.Shards {
		primaries[sc.Name] = sc.address()
	}
	s.mu.Lock()
	pools := make(map[poolKey]*pool.Pool, len(s.pools))
	maps.Copy(pools, s.pools)
	s.mu.Unlock()
	var rows [][]string
	for k, p := range pools {
		st, cfg := p.Stats(), p.Config()
		role := "replica"
		if primaries[k.shard] == k.addr {
			role = "primary"
		}
		rows = append(rows, []string{k.shard, k.addr, role, k.user, k.db, itoa(cfg.Size), itoa(st.Open), itoa(st.Idle),
			itoa(st.Open - st.Idle), itoa(st.Waiting), utoa(st.Acquired), utoa(st.Waits),
			strconv.FormatFloat(st.WaitTime.Seconds(), 'f', 3, 64), utoa(st.Timeouts), utoa(st.Dials), utoa(st.DialFails)})
	}
	sortRows(rows)
	return rows
}

// clientRows describes every client session.
func (s *Server) clientRows() [][]string {
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	var rows [][]string
	for _, ss := range sessions {
		ss.mu.Lock()
		shard, server, tx := "", "", ss.st.txLabel()
		if a := ss.st.cur(); a != nil {
			shard, server = a.shard, a.conn.Addr
		}
		state := ss.st.life.String()
		if ss.console {
			state = "admin console"
		}
		ss.mu.Unlock()
		rows = append(rows, []string{ss.user.cfg.Name, ss.db, ss.conn.RemoteAddr().String(), state, shard, server, tx, utoa(uint64(ss.key.pid))})
	}
	sortRows(rows)
	return rows
}

// shardRows describes every server of the shard map.
func (s *Server) shardRows() [][]string {
	m := s.runtime().cfg.shardMap
	if m == nil {
		return nil
	}
	epoch := strconv.FormatUint(m.Epoch, 10)
	var rows [][]string
	for _, sh := range m.Shards {
		rows = append(rows, []string{sh.Name, "primary", sh.Primary.String(), s.endpointState(sh.Primary.String()), epoch})
		for _, r := range sh.Replicas {
			rows = append(rows, []string{sh.Name, "replica", r.String(), s.endpointState(r.String()), epoch})
		}
		for _, f := range sh.Fenced {
			rows = append(rows, []string{sh.Name, "fenced", f.String(), "fenced: gets no traffic until re-joined", epoch})
		}
	}
	return rows
}

// statRows are the proxy's totals.
func (s *Server) statRows() [][]string {
	s.mu.Lock()
	clients := len(s.sessions)
	s.mu.Unlock()
	rows := [][]string{{"clients", itoa(clients)}}
	for _, c := range []struct {
		name string
		m    interface{ Write(*dto.Metric) error }
	}{
		{"queries", s.metrics.queries}, {"transactions", s.metrics.transactions},
		{"buffered_statements", s.metrics.buffered},
	} {
		var d dto.Metric
		if err := c.m.Write(&d); err == nil && d.Counter != nil {
			rows = append(rows, []string{c.name, strconv.FormatFloat(d.Counter.GetValue(), 'f', -1, 64)})
		}
	}
	rows = append(rows, []string{"map_epoch", strconv.FormatUint(s.MapEpoch(), 10)})
	if t := s.MetaContact(); !t.IsZero() {
		rows = append(rows, []string{"meta_contact_seconds_ago", strconv.FormatFloat(time.Since(t).Seconds(), 'f', 1, 64)})
	}
	return rows
}

// configRows are the settings an operator checks first; never secrets.
func (s *Server) configRows() [][]string {
	c := s.runtime().cfg
	return append([][]string{
		{"listen", c.Listen}, {"pool_mode", string(c.PoolMode)}, {"pool.size", itoa(c.Pool.Size)},
		{"pool.wait_timeout", c.Pool.WaitTimeout.D().String()}, {"limits.max_client_conn", itoa(c.Limits.MaxClientConn)},
		{"default_shard", c.DefaultShard}, {"broadcast_writes", c.BroadcastWrites}, {"transactions.cross_shard", c.Transactions.CrossShard},
		{"reads.read_from", c.Reads.ReadFrom}, {"reads.consistency", c.Reads.Consistency},
		{"reads.max_lag_bytes", strconv.FormatInt(c.Reads.MaxLagBytes, 10)}, {"reads.max_lag", c.Reads.MaxLag.D().String()},
		{"buffer.window", c.Buffer.Window.D().String()}, {"buffer.max_queued", itoa(c.Buffer.MaxQueued)},
		{"meta_lease", c.MetaLease.D().String()}, {"health_interval", c.HealthInterval.D().String()},
		{"tls.mode", c.TLS.Mode}, {"backend.sslmode", c.Backend.SSLMode},
	}, opsConfigRows(c)...)
}

// sortRows orders rows by their columns, left to right.
func sortRows(rows [][]string) {
	slices.SortFunc(rows, func(a, b []string) int { return slices.Compare(a, b) })
}

func itoa(i int) string    { return strconv.Itoa(i) }
func utoa(u uint64) string { return strconv.FormatUint(u, 10) }
