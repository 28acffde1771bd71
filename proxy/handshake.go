package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/router"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/auth"
)

// maxAuthMessage bounds messages during authentication, like PostgreSQL.
const maxAuthMessage = 65535

// clientBufferSize is the read buffer per client connection.
const clientBufferSize = 16 << 10

func newCancelKey() cancelKey {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return cancelKey{pid: binary.BigEndian.Uint32(b[:4]) & 0x7fffffff, secret: binary.BigEndian.Uint32(b[4:])}
}

// handleConn runs the startup phase (TLS, authentication) and then the
// client's session. It reports whether the session parked (park.go): then
// the goroutine that ends it marks the connection done (resumeSession).
func (s *Server) handleConn(ctx context.Context, nc net.Conn) (parked bool) {
	rt := s.runtime()
	_ = nc.SetDeadline(time.Now().Add(rt.cfg.Limits.StartupTimeout.D()))
	conn, st, ok := s.negotiate(ctx, rt, nc)
	if !ok {
		_ = nc.Close()
		return false
	}
	if tc, plain := conn.(*net.TCPConn); plain && s.parker != nil {
		conn = newParkConn(tc) // taken out of the poller while parked
	}
	ss, ok := s.startSession(ctx, rt, conn, st)
	if !ok {
		_ = conn.Close()
		return false
	}
	_ = conn.SetDeadline(time.Time{})
	if ss.console {
		ss.serveConsole(ctx)
		return false
	}
	ss.park.early = earlyParks
	ss.parkEarly()
	return ss.serve(ctx)
}

// kickSession wakes a parked session after its connection got a read
// deadline or was closed from outside it.
func (s *Server) kickSession(ss *session) {
	if s.parker != nil {
		s.parker.kick(ss)
	}
}

// reject sends a FATAL error during startup.
func (s *Server) reject(conn net.Conn, e *wire.Error) {
	if e.Severity == "" {
		e.Severity = "FATAL"
	}
	s.metrics.errorCode(e.Code)
	_, _ = conn.Write(wire.AppendErrorResponse(nil, e))
}

// negotiate reads startup packets until a StartupMessage, answering
// SSLRequest and GSSENCRequest and handling CancelRequest.
func (s *Server) negotiate(ctx context.Context, rt *runtime, nc net.Conn) (net.Conn, wire.Startup, bool) {
	conn := nc
	encrypted := false
	for {
		st, err := wire.ReadStartup(conn)
		if err != nil {
			var we *wire.Error
			if errors.As(err, &we) {
				s.reject(conn, we)
			} else {
				s.log.Debug("startup read failed", "remote", nc.RemoteAddr(), "err", err)
			}
			return nil, wire.Startup{}, false
		}
		switch st.Kind {
		case wire.KindSSLRequest:
			if encrypted {
				s.reject(conn, wire.Fatalf(wire.SQLStateProtocolViolation, "SSLRequest on an encrypted connection"))
				return nil, wire.Startup{}, false
			}
			if rt.tls == nil {
				if _, err := conn.Write([]byte{'N'}); err != nil {
					return nil, wire.Startup{}, false
				}
				continue
			}
			if _, err := conn.Write([]byte{'S'}); err != nil {
				return nil, wire.Startup{}, false
			}
			tc := tls.Server(nc, rt.tls)
			if err := tc.HandshakeContext(ctx); err != nil {
				s.log.Debug("TLS handshake failed", "remote", nc.RemoteAddr(), "err", err)
				return nil, wire.Startup{}, false
			}
			conn = tc
			encrypted = true
		case wire.KindGSSENCRequest:
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return nil, wire.Startup{}, false
			}
		case wire.KindCancelRequest:
			if len(st.Cancel.SecretKey) == 4 {
				s.cancel(ctx, cancelKey{pid: st.Cancel.ProcessID, secret: binary.BigEndian.Uint32(st.Cancel.SecretKey)})
			}
			return nil, wire.Startup{}, false
		case wire.KindStartup:
			if rt.cfg.TLS.Mode == "require" && !encrypted {
				s.reject(conn, wire.Fatalf(wire.SQLStateInvalidAuthorization, "pgshard accepts only TLS connections; connect with sslmode=require"))
				return nil, wire.Startup{}, false
			}
			return conn, st, true
		}
	}
}

// startSession authenticates the client and greets it like PostgreSQL.
func (s *Server) startSession(ctx context.Context, rt *runtime, conn net.Conn, st wire.Startup) (*session, bool) {
	params := st.Message.Parameters
	userName := params["user"]
	db := params["database"]
	if db == "" {
		db = userName
	}
	if r := params["replication"]; r != "" && r != "false" && r != "off" && r != "0" && r != "no" {
		s.reject(conn, wire.Fatalf(wire.SQLStateFeatureNotSupported, "replication connections are not supported through pgshard"))
		return nil, false
	}
	if e := s.limitAddressConnection(conn.RemoteAddr()); e != nil {
		s.reject(conn, e)
		return nil, false
	}
	if st.Negotiate != nil {
		msg, _ := st.Negotiate.Encode(nil)
		if _, err := conn.Write(msg); err != nil {
			return nil, false
		}
	}
	us := rt.users[userName]
	if us == nil {
		var err error
		if us, err = s.authQueryUser(ctx, rt, userName); err != nil {
			s.log.Error("auth_query failed", "user", userName, "err", err)
			s.reject(conn, authQueryFailed())
			return nil, false
		}
	}
	method, cred := auth.SCRAMSHA256, auth.Credential{} // unknown users fail a fake exchange
	if us != nil {
		method, cred = us.method, us.cred
	}
	opts := auth.Options{}
	if tc, ok := conn.(*tls.Conn); ok && tc != nil {
		opts.TLSServerEndPoint = rt.tlsEP
	}
	// The exchange reads through the session's own reader: no buffer of
	// its own, and whatever the client sends after its last message stays
	// for the session.
	rd := newClientReader(conn)
	be := auth.NewFrameConn(wire.NewFrameReader(rd, maxAuthMessage), conn)
	if err := auth.Authenticate(ctx, be, method, userName, cred, opts); err != nil {
		var ae *auth.Error
		if errors.As(err, &ae) {
			s.log.Info("client authentication failed", "user", userName, "remote", conn.RemoteAddr(), "code", ae.Code)
			s.reject(conn, &wire.Error{Code: ae.Code, Message: ae.Message})
		}
		return nil, false
	}
	if us == nil { // trust for unknown users never happens; be safe
		s.reject(conn, wire.Fatalf(wire.SQLStateInvalidPassword, "password authentication failed for user %q", userName))
		return nil, false
	}
	if e := s.limitUserConnection(us); e != nil {
		s.reject(conn, e)
		return nil, false
	}
	if n := us.clients.Add(1); us.cfg.MaxClientConn > 0 && n > int64(us.cfg.MaxClientConn) {
		us.clients.Add(-1)
		s.reject(conn, wire.Fatalf(wire.SQLStateTooManyConnections, "too many connections for role %q", userName))
		return nil, false
	}
	mode := rt.cfg.PoolMode
	if us.cfg.PoolMode != "" {
		mode = us.cfg.PoolMode
	}
	ss := &session{
		srv:         s,
		conn:        conn,
		in:          wire.NewFrameReader(rd, rt.cfg.Limits.MaxMessageSize),
		rd:          rd,
		user:        us,
		db:          db,
		key:         newCancelKey(),
		sessionPool: mode == PoolSession,
		sets:        newSettings(params),
		log:         us.sessionLogger(s.log, userName),
		st:          sessionState{obs: s.metrics},
	}
	if db == ConsoleDatabase {
		if !s.isAdmin(userName) {
			us.clients.Add(-1)
			s.reject(conn, wire.Fatalf(wire.SQLStateInsufficientPrivilege, "permission denied: user %q may not use the pgshard admin console", userName))
			return nil, false
		}
		ss.console = true
	}
	if err := s.register(ss); err != nil {
		us.clients.Add(-1)
		s.reject(conn, wire.AsError(err))
		return nil, false
	}
	if ss.console {
		out := append(make([]byte, 0, 256), 'R', 0, 0, 0, 8, 0, 0, 0, 0) // AuthenticationOk
		for _, kv := range consoleParams {
			out = wire.AppendParameterStatus(out, kv[0], kv[1])
		}
		out = wire.AppendReadyForQuery(out, 'I')
		if _, err := conn.Write(out); err != nil {
			s.forget(ss)
			return nil, false
		}
		return ss, true
	}
	serverParams, err := s.serverParams(ctx, ss)
	if err == nil {
		err = s.checkStartupParams(ctx, ss)
	}
	if err == nil {
		err = s.bindSession(ctx, ss)
	}
	if err != nil {
		s.reject(conn, wire.AsError(err))
		s.forget(ss)
		return nil, false
	}
	out := make([]byte, 0, 512)
	out = append(out, 'R', 0, 0, 0, 8, 0, 0, 0, 0) // AuthenticationOk
	out = appendReportedParams(out, serverParams, params)
	out = append(out, 'K', 0, 0, 0, 12)
	out = binary.BigEndian.AppendUint32(out, ss.key.pid)
	out = binary.BigEndian.AppendUint32(out, ss.key.secret)
	out = wire.AppendReadyForQuery(out, 'I')
	if _, err := conn.Write(out); err != nil {
		ss.finish() // gives back a server connection bindSession attached
		return nil, false
	}
	return ss, true
}

// bindSession attaches a session-pooled client's server connection at
// startup when the client can never use another one (the configuration
// has one shard), and makes that connection's BackendKeyData the
// client's: the process id the client is told is its server's, so
// pg_terminate_backend and pg_cancel_backend of it from another
// connection act on the client's session, and its CancelRequest (with
// the server's key) still goes through the proxy. With several shards a
// session-pooled client may use several server connections and keeps the
// proxy's own key.
func (s *Server) bindSession(ctx context.Context, ss *session) error {
	if !ss.sessionPool || len(s.runtime().cfg.Shards) != 1 {
		return nil
	}
	be, err := ss.attach(ctx, router.Query{})
	if err != nil {
		return err
	}
	ss.mu.Lock()
	ss.unsynced = false // nothing was sent: the connection is idle
	ss.mu.Unlock()
	if len(be.Secret) != 4 {
		return nil // not a 32-bit key: keep the proxy's own
	}
	key := cancelKey{pid: be.PID, secret: binary.BigEndian.Uint32(be.Secret)}
	s.mu.Lock()
	if _, taken := s.cancels[key]; !taken {
		delete(s.cancels, ss.key)
		ss.key = key
		s.cancels[key] = ss
	}
	s.mu.Unlock()
	return nil
}

// serverParams returns the ParameterStatus values the client is greeted
// with. Getting them also proves the database exists and the backend
// credentials work before the client is told it is in, which any server
// of any shard proves alike (every shard has the same databases and
// roles): so a new session does not depend on one shard. The values come
// from the first connection of any pool of the session's backend user and
// database; without one, from a new connection to the default shard's
// primary unless the health monitor saw it down or its shard switches
// primaries, else to another shard's primary seen up — a session that
// writes to a healthy shard is not held up by the partition or failover
// of the default one. Replicas are not asked (they report in_hot_standby
// on).
func (s *Server) serverParams(ctx context.Context, ss *session) (map[string]string, error) {
	if params := s.knownParams(ss.user.beUser, ss.db); params != nil {
		return params, nil
	}
	plan, err := s.router().Route(router.Query{})
	if err != nil {
		return nil, err
	}
	shard := plan.Shard
	if shards := s.startupShards(plan.Shard); len(shards) > 1 {
		if sh, ok := s.upPrimary(s.endpointStatuses(), shards, nil); ok {
			shard = sh
		}
	}
	p, err := s.pool(ctx, shard, ss.user, ss.db)
	if err != nil {
		return nil, err
	}
	if params := s.cachedParams(p); params != nil {
		return params, nil
	}
	be, err := s.acquire(ctx, p)
	if err != nil {
		s.dropUnusedPool(p)
		e := wire.AsError(err)
		if be == nil && e.Code != wire.SQLStateTooManyConnections {
			// Show the server's own reason (e.g. database does not exist).
			var pgErr interface{ SQLState() string }
			if errors.As(err, &pgErr) {
				e = &wire.Error{Severity: "FATAL", Code: pgErr.SQLState(), Message: serverMessage(err)}
			}
		}
		return nil, e
	}
	params := make(map[string]string, len(be.Params))
	for k, v := range be.Params {
		params[k] = v
	}
	p.Release(be)
	s.mu.Lock()
	s.params[p] = params
	s.mu.Unlock()
	return params, nil
}

// knownParams returns the ParameterStatus values cached for any pool of
// backend user and database db, or nil.
func (s *Server) knownParams(user, db string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, p := range s.pools {
		if k.user != user || k.db != db {
			continue
		}
		if params := s.params[p]; params != nil {
			return params
		}
	}
	return nil
}

// startupShards returns the shards whose primaries may greet a new
// session: first, every shard of the configuration after it.
func (s *Server) startupShards(first string) []string {
	shards := []string{first}
	for _, sc := range s.runtime().cfg.Shards {
		if sc.Name != first {
			shards = append(shards, sc.Name)
		}
	}
	return shards
}

func (s *Server) cachedParams(p *pool.Pool) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.params[p]
}

// serverMessage extracts the server's message from a pgconn error chain.
func serverMessage(err error) string {
	var pe interface{ Error() string }
	type pgError interface{ SQLState() string }
	for e := err; e != nil; e = errors.Unwrap(e) {
		if _, ok := e.(pgError); ok {
			pe = e
		}
	}
	if pe == nil {
		return err.Error()
	}
	msg := pe.Error()
	// pgconn formats "SEVERITY: message (SQLSTATE xxxxx)"
	if i := strings.Index(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	if i := strings.LastIndex(msg, " (SQLSTATE"); i >= 0 {
		msg = msg[:i]
	}
	return msg
}

// appendReportedParams appends a ParameterStatus message for each of the
// server's parameters, with the client's startup value where the client
// set the parameter (names compared regardless of case; the session
// applies those values on backends). No map is built: a connection's
// greeting took two maps and a slice before.
func appendReportedParams(out []byte, server, client map[string]string) []byte {
	for k, v := range server {
		for ck, cv := range client {
			if strings.EqualFold(ck, k) {
				v = cv
				break
			}
		}
		out = wire.AppendParameterStatus(out, k, v)
	}
	return out
}
