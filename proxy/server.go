package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/replication/twophase"
	"github.com/pgshard/pgshard/router"
	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/auth"
)

// userState is a configured user with its parsed credential.
type userState struct {
	cfg    UserConfig
	method auth.Method
	cred   auth.Credential
	// backend credentials
	beUser, bePassword string
	clients            atomic.Int64
	// reads is the global reads configuration with the user's overrides.
	reads ReadConfig
	// log is the user's session logger, shared by its sessions (built on
	// first use: sessionLogger).
	log atomic.Pointer[slog.Logger]
}

// runtime is the part of the configuration that reload swaps atomically.
type runtime struct {
	cfg    *Config
	users  map[string]*userState
	router router.Router
	tls    *tls.Config
	tlsEP  []byte // tls-server-end-point channel binding data
	// deferParse holds Parse messages until Bind: the router routes by
	// parameter values.
	deferParse bool
	// twoPhase lets transactions span shards (multitx.go).
	twoPhase bool
	// shards indexes cfg.Shards by name with each primary's address, so
	// a transaction finds its pool without building the address string.
	shards map[string]runtimeShard
}

type runtimeShard struct {
	cfg  *ShardConfig
	addr string // host:port of the primary
}

// Server is a running proxy.
type Server struct {
	rt      atomic.Pointer[runtime]
	metrics *metrics
	log     *slog.Logger // from Config.Logger; sessions add their attributes
	ln      net.Listener

	mu       sync.Mutex
	sessions map[*session]struct{}
	cancels  map[cancelKey]*session
	pools    map[poolKey]*pool.Pool
	params   map[*pool.Pool]map[string]string // ParameterStatus per pool
	shutdown atomic.Bool

	conns sync.WaitGroup // one per accepted connection
	aggs  aggCache       // which functions are aggregates (aggcheck.go)
	colls collations     // which databases sort text bytewise (collation.go)

	health       *health.Monitor             // endpoint probes (health.go); under mu
	replicas     atomic.Pointer[replicaView] // replicas fit for reads (reads.go)
	readTurn     atomic.Uint64               // spreads reads over equal replicas
	stopHealthFn context.CancelFunc          // stops health; under mu
	mapMu        sync.Mutex                  // serializes ApplyMap
	mapChanged   chan struct{}               // closed at the next ApplyMap (buffer.go); under mapMu
	buffered     atomic.Int64                // statements waiting in buffer
	followsMeta  atomic.Bool                 // FollowMeta runs: buffer on unreachable primaries, fail closed
	metaContact  atomic.Int64                // unix nanos of the last heartbeat the meta leader answered
	metaMap      atomic.Bool                 // FollowMeta has applied (or confirmed) a map from meta
	bg           sync.WaitGroup              // background clean-ups (discardBusy)
	done         chan struct{}

	endpoints atomic.Pointer[endpointView] // every endpoint's health, for describing (describe.go)
	startupOK startupChecked               // startup parameters known to apply (startupcheck.go)

	ops opsState // console commands, rate limits, auth_query (console_ops.go)

	tpc twoPhaseState    // transactions over several shards (multitx.go)
	dl  deadlockDetector // deadlocks across shards (deadlock_detect.go)

	cache   *serverCache // the hot-row cache, nil when off (cache.go)
	cacheOn atomic.Bool  // the cache is on and the map has cacheable tables

	parker *parker // parks idle clients (park.go); nil when off
}

// poolKey names a pool: the server at addr (the shard's primary or one
// of its replicas) for a backend user and database.
type poolKey struct {
	shard, addr, user, db string
}

// cancelKey is what a client presents in a CancelRequest.
type cancelKey struct {
	pid    uint32
	secret uint32
}

// NewServer validates cfg and prepares a server. Serve starts it.
func NewServer(cfg *Config) (*Server, error) {
	s := &Server{}
	rt, err := s.newRuntime(cfg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	*s = Server{
		log:      log,
		metrics:  newMetrics(),
		sessions: make(map[*session]struct{}),
		cancels:  make(map[cancelKey]*session),
		pools:    make(map[poolKey]*pool.Pool),
		params:   make(map[*pool.Pool]map[string]string),
		done:     make(chan struct{}),
	}
	s.rt.Store(rt)
	s.ops.limits = newRateLimiter(s.metrics.reg)
	s.ops.limits.observe(cfg.RateLimits)
	s.metrics.registerPools(s)
	if s.tpc.metrics, err = twophase.NewMetrics(s.metrics.reg); err != nil {
		return nil, err
	}
	s.metrics.registerMetaState(s)
	if err := s.dl.init(s.metrics.reg); err != nil {
		return nil, err
	}
	s.metrics.mapEpoch.Set(float64(s.MapEpoch()))
	if err := s.initCache(cfg); err != nil {
		return nil, err
	}
	if on, asked := cfg.Limits.parkIdleClients(); on {
		if s.parker, err = newParker(s.resumeSession, s.appendSessions); err != nil && asked {
			return nil, err
		}
	}
	if s.parker != nil {
		p := s.parker
		s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pgshard_clients_parked",
			Help: "Idle clients parked without a goroutine (limits.park_idle_clients).",
		}, func() float64 { return float64(p.count()) }))
	}
	// map_state_file only ever holds maps the meta cluster sent
	// (FollowMeta saves the one it starts with once meta confirms it).
	// A proxy that follows meta refuses writes from the start, until
	// FollowMeta has the cluster's map and the leader's answer.
	s.followsMeta.Store(cfg.FollowsMeta)
	return s, nil
}

func (s *Server) newRuntime(cfg *Config) (*runtime, error) {
	if cfg.shardMap == nil && len(cfg.Shards) == 0 {
		return nil, errors.New("no shards: the configuration has no shards and no shard map")
	}
	rt := &runtime{
		cfg:      cfg,
		users:    make(map[string]*userState),
		twoPhase: cfg.Transactions.CrossShard == CrossShardTwoPhase,
		shards:   make(map[string]runtimeShard, len(cfg.Shards)),
	}
	for i := range cfg.Shards {
		sc := &cfg.Shards[i]
		rt.shards[sc.Name] = runtimeShard{cfg: sc, addr: sc.address()}
	}
	switch {
	case cfg.shardMap != nil:
		rt.router = router.PlanRouter{
			Planner:        plan.New(cfg.shardMap, plan.Options{DefaultShard: cfg.DefaultShard, ReplicaSafeFuncs: cfg.Reads.SafeFunctions}),
			Default:        cfg.DefaultShard,
			AllowBroadcast: cfg.BroadcastWrites == "allow",
			EndpointState:  s.endpointState,
		}
		rt.deferParse = true
	case len(cfg.Shards) == 1:
		rt.router = router.SingleShard{Shard: cfg.Shards[0].Name}
	default:
		hr := router.HintRouter{Default: cfg.DefaultShard, Shards: map[string]bool{}}
		for _, sh := range cfg.Shards {
			hr.Shards[sh.Name] = true
		}
		rt.router = hr
	}
	for _, u := range cfg.Users {
		m, err := auth.ParseMethod(u.Auth)
		if err != nil {
			return nil, fmt.Errorf("user %q: %w", u.Name, err)
		}
		cred, err := credential(m, u.Password)
		if err != nil {
			return nil, fmt.Errorf("user %q: %w", u.Name, err)
		}
		us := &userState{cfg: u, method: m, cred: cred, beUser: cfg.Backend.User, bePassword: cfg.Backend.Password,
			reads: cfg.Reads.over(u.Reads)}
		if u.BackendUser != "" {
			us.beUser = u.BackendUser
		}
		if us.beUser == "" {
			us.beUser = u.Name
		}
		if u.BackendPasswordEnv != "" {
			us.bePassword = os.Getenv(u.BackendPasswordEnv)
		}
		rt.users[u.Name] = us
	}
	if cfg.TLS.Mode != "disable" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: load certificate: %w", err)
		}
		rt.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("tls: parse certificate: %w", err)
		}
		if rt.tlsEP, err = auth.TLSServerEndPoint(leaf); err != nil {
			return nil, fmt.Errorf("tls: channel binding data: %w", err)
		}
	}
	return rt, nil
}

func (s *Server) runtime() *runtime     { return s.rt.Load() }
func (s *Server) router() router.Router { return s.rt.Load().router }
func (s *Server) shuttingDown() bool    { return s.shutdown.Load() }

// Listen opens the client listener (so callers learn the address before
// Serve). Serve calls it when it has not been called.
func (s *Server) Listen() error {
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.runtime().cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.runtime().cfg.Listen, err)
	}
	s.ln = ln
	return nil
}

// Addr returns the client listener's address (after Listen).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve accepts clients until Shutdown or Close; it returns nil then.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	defer close(s.done)
	s.startHealth()
	s.startCache()
	s.startDeadlocks()
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.shuttingDown() || errors.Is(err, net.ErrClosed) {
				s.conns.Wait()
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(delay*2, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		delay = 0
		s.conns.Add(1)
		go func() {
			if !s.handleConn(ctx, c) {
				s.conns.Done() // else the session's last goroutine does
			}
		}()
	}
}

// Shutdown stops accepting, lets transactions finish and closes idle
// clients with 57P01, then closes what is left when ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.shutdown.CompareAndSwap(false, true) {
		return nil
	}
	s.stopHealth()
	s.resumeAll() // statements held by PAUSE run (or fail) now
	if s.ln != nil {
		_ = s.ln.Close()
	}
	backoff := 5 * time.Millisecond
	for {
		s.kickIdle()
		if s.sessionCount() == 0 {
			break
		}
		select {
		case <-ctx.Done():
			s.closeAll()
		case <-time.After(backoff):
			backoff = min(backoff*2, 200*time.Millisecond)
			continue
		}
		break
	}
	if s.ln != nil {
		<-s.done
	}
	s.bg.Wait()
	s.stopDeadlocks()
	if s.parker != nil {
		s.parker.stop()
	}
	s.stopCache()
	s.closePools()
	return ctx.Err()
}

// Close closes everything at once.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = s.Shutdown(ctx)
	return nil
}

// appendSessions appends the client sessions to list.
func (s *Server) appendSessions(list []*session) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ss := range s.sessions {
		list = append(list, ss)
	}
	return list
}

func (s *Server) sessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// kickIdle wakes sessions that are between transactions so they say
// goodbye to their clients.
func (s *Server) kickIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ss := range s.sessions {
		ss.mu.Lock()
		idle := ss.st.idle(ss.pipe())
		ss.mu.Unlock()
		if idle {
			_ = ss.conn.SetReadDeadline(time.Now())
			s.kickSession(ss)
		}
	}
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ss := range s.sessions {
		_ = ss.conn.Close()
		s.kickSession(ss)
	}
}

func (s *Server) closePools() {
	s.mu.Lock()
	pools := s.pools
	s.pools = make(map[poolKey]*pool.Pool)
	s.mu.Unlock()
	for _, p := range pools {
		p.Close()
	}
}

// Reload applies a new configuration: users and pool sizes change at
// once; connected clients stay.
func (s *Server) Reload(cfg *Config) error {
	old := s.runtime()
	if cfg.Listen != old.cfg.Listen {
		return fmt.Errorf("reload: listen address cannot change at run time (%s → %s)", old.cfg.Listen, cfg.Listen)
	}
	if m := old.cfg.shardMap; m != nil && (s.followsMeta.Load() || cfg.shardMap == nil || cfg.shardMap.Epoch < m.Epoch) {
		// A newer map applied at run time stays, and so does the meta
		// cluster's map whatever the file says.
		cfg.shardMap = m
		cfg.Shards = mapShards(m, cfg.Shards)
	}
	rt, err := s.newRuntime(cfg)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	// keep per-user client counts
	for name, u := range rt.users {
		if o, ok := old.users[name]; ok {
			u.clients.Store(o.clients.Load())
		}
	}
	if cfg.ReloadFunc == nil {
		cfg.ReloadFunc = old.cfg.ReloadFunc
	}
	s.rt.Store(rt)
	s.ops.limits.observe(cfg.RateLimits)
	s.cacheMapApplied(cfg.shardMap)
	s.mu.Lock()
	for _, p := range s.pools {
		p.SetSize(cfg.Pool.Size)
	}
	s.mu.Unlock()
	s.log.Info("configuration reloaded", "users", len(rt.users))
	return nil
}

// pool returns the pool of shard's primary for (user, database),
// creating it.
func (s *Server) pool(ctx context.Context, shard string, u *userState, db string) (*pool.Pool, error) {
	return s.poolAt(ctx, shard, "", u, db)
}

// poolAt returns the pool of the server at addr — the primary of shard
// when addr is "", else one of its replicas — for (user, database),
// creating it.
func (s *Server) poolAt(ctx context.Context, shard, addr string, u *userState, db string) (*pool.Pool, error) {
	rt := s.runtime()
	rs, ok := rt.shards[shard]
	if !ok {
		return nil, wire.Errorf(wire.SQLStateInternalError, "shard %q is not configured", shard)
	}
	sc := rs.cfg
	if addr == "" {
		addr = rs.addr
	}
	k := poolKey{shard: shard, addr: addr, user: u.beUser, db: db}
	s.mu.Lock()
	p := s.pools[k]
	s.mu.Unlock()
	if p != nil {
		return p, nil
	}
	dbName := db
	if sc.Database != "" {
		dbName = sc.Database
	}
	pc := rt.cfg.Pool
	np, err := pool.New(pool.Config{
		Addr:           addr,
		User:           u.beUser,
		Password:       u.bePassword,
		Database:       dbName,
		SSLMode:        rt.cfg.Backend.SSLMode,
		SSLRootCert:    rt.cfg.Backend.SSLRootCert,
		SSLCert:        rt.cfg.Backend.SSLCert,
		SSLKey:         rt.cfg.Backend.SSLKey,
		Size:           pc.Size,
		WaitTimeout:    pc.WaitTimeout.D(),
		ConnectTimeout: pc.ConnectTimeout.D(),
		IdleTimeout:    pc.IdleTimeout.D(),
		MaxLifetime:    pc.MaxLifetime.D(),

		AckTimeout:        rt.cfg.Backend.AckTimeout.D(),
		KeepAliveIdle:     rt.cfg.Backend.KeepAliveIdle.D(),
		KeepAliveInterval: rt.cfg.Backend.KeepAliveInterval.D(),
		KeepAliveCount:    rt.cfg.Backend.KeepAliveCount,
	})
	if err != nil {
		return nil, fmt.Errorf("create pool: %w", err)
	}
	s.mu.Lock()
	if p = s.pools[k]; p == nil {
		s.pools[k] = np
		p = np
		np = nil
	}
	s.mu.Unlock()
	if np != nil {
		np.Close()
	}
	return p, nil
}

// dropUnusedPool removes a pool that has no connections (its first
// connection failed, say for a database that does not exist), so clients
// cannot pile up pools for names that lead nowhere.
func (s *Server) dropUnusedPool(p *pool.Pool) {
	if p.Stats().Open > 0 {
		return
	}
	s.mu.Lock()
	for k, q := range s.pools {
		if q == p {
			delete(s.pools, k)
		}
	}
	delete(s.params, p)
	s.mu.Unlock()
	p.Close()
}

// acquire gets a backend and turns pool errors into client errors.
// lend returns a server connection of shard for user and database db.
// The caller gives it back with Release (which discards a broken one) or
// Discard.
func (s *Server) lend(ctx context.Context, shard string, user *userState, db string) (*pool.Conn, error) {
	return s.acquirePrimary(ctx, shard, user, db)
}

func (s *Server) acquire(ctx context.Context, p *pool.Pool) (*pool.Conn, error) {
	if err := s.waitPaused(ctx, p); err != nil {
		return nil, err
	}
	be, err := p.Acquire(ctx)
	if err == nil {
		return be, nil
	}
	switch {
	case errors.Is(err, pool.ErrTimeout):
		return nil, &wire.Error{Code: wire.SQLStateTooManyConnections,
			Message: "no server connection available: pool is exhausted",
			Detail:  fmt.Sprintf("All %d connections to %s are in use and none was released within %s.", p.Config().Size, p.Config().Addr, p.Config().WaitTimeout),
			Hint:    "Raise pool.size or pool.wait_timeout, or shorten transactions.", Err: err}
	case errors.Is(err, pool.ErrClosed):
		e := wire.Fatalf(wire.SQLStateAdminShutdown, "terminating connection due to administrator command")
		e.Err = err
		return nil, e
	default:
		var pgErr interface{ SQLState() string }
		code := wire.SQLStateConnectionFailure
		msg := "could not connect to server"
		if errors.As(err, &pgErr) {
			code = pgErr.SQLState()
		}
		s.log.Warn("backend connect failed", "server", p.Config().Addr, "err", err)
		return nil, &wire.Error{Code: code, Message: msg, Detail: fmt.Sprintf("pgshard could not open a connection to %s.", p.Config().Addr), Err: err}
	}
}

func (s *Server) register(ss *session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shuttingDown() {
		return wire.Fatalf(wire.SQLStateCannotConnectNow, "the proxy is shutting down")
	}
	if len(s.sessions) >= s.runtime().cfg.Limits.MaxClientConn {
		return wire.Fatalf(wire.SQLStateTooManyConnections, "sorry, too many clients already")
	}
	for {
		if _, taken := s.cancels[ss.key]; !taken {
			break
		}
		ss.key = newCancelKey()
	}
	s.sessions[ss] = struct{}{}
	s.cancels[ss.key] = ss
	s.metrics.clientConnected()
	return nil
}

// forget removes a finished session.
func (s *Server) forget(ss *session) {
	ss.mu.Lock()
	ss.st.close() // (a session that never attached: nothing to give back)
	ss.mu.Unlock()
	s.mu.Lock()
	if _, ok := s.sessions[ss]; ok {
		delete(s.sessions, ss)
		delete(s.cancels, ss.key)
		s.metrics.clientDisconnected()
		ss.user.clients.Add(-1)
	}
	s.mu.Unlock()
}

// discardBusy cancels whatever a backend is running and then discards it,
// in the background so the session can end at once.
func (s *Server) discardBusy(be *pool.Conn) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := be.Cancel(ctx); err != nil {
			s.log.Debug("cancel before discard failed", "server", be.Addr, "err", err)
		}
		be.Pool().Discard(be)
	}()
}

// cancel forwards a client's CancelRequest to the backend running its
// query, or to every shard of its statement over several shards. The backend is held for the cancel (pool.Conn.HoldForCancel) so
// it cannot be lent to another client before the cancel arrives, but the
// session is not: a server that cannot be reached delays nothing but
// this goroutine (of the cancel request's connection), for at most
// cancelTimeout.
func (s *Server) cancel(ctx context.Context, key cancelKey) {
	s.mu.Lock()
	ss := s.cancels[key]
	s.mu.Unlock()
	if ss == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, cancelTimeout)
	defer cancel()
	// A statement over several shards: every shard it runs on.
	ss.scatterCancel.Cancel(ctx)
	ss.mu.Lock()
	be := ss.st.conn()
	var done func(bool)
	if be != nil {
		done = be.HoldForCancel()
	}
	ss.mu.Unlock()
	if be == nil {
		return
	}
	err := be.Cancel(ctx)
	done(err == nil || errors.Is(err, pool.ErrCancelNotSent))
	if err != nil {
		s.log.Warn("forward cancel request failed", "server", be.Addr, "err", err)
	}
}

// cancelTimeout bounds forwarding one CancelRequest.
const cancelTimeout = 5 * time.Second
