package proxy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgshard/pgshard/cache"
	"github.com/pgshard/pgshard/cache/stream"
	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/shardmap"
)

// The hot-row cache (package cache) on the proxy's side: configuration,
// the shard map's cacheable tables applied live, and one invalidation
// stream reader (package cache/stream) per shard primary, replaced when
// the map moves the primary. The session's side is in cache_session.go.

// CacheConfig is the proxy's "cache:" section. Which tables are cached is
// the shard map's (a table's cache settings); this says whether this
// proxy caches at all, and how.
type CacheConfig struct {
	// Enabled turns the cache on (default off).
	Enabled bool `yaml:"enabled"`
	// MaxBytes is the memory budget of the cached results (default 256 MiB).
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxStreamLag is the staleness bound: a shard whose invalidation
	// stream is down or later than this is bypassed (default 2s).
	MaxStreamLag Duration `yaml:"max_stream_lag"`
	// Database is the database of the cacheable tables, the one the
	// invalidation streams read (default "postgres"); sessions of other
	// databases are not cached.
	Database string `yaml:"database"`
	// StreamUser is the role of the invalidation streams: it needs the
	// REPLICATION attribute (and, to create the publication, ownership
	// of the tables). Default: backend.user.
	StreamUser string `yaml:"stream_user"`
	// StreamPasswordEnv names the environment variable holding
	// StreamUser's password (default: backend's password).
	StreamPasswordEnv string `yaml:"stream_password_env"`
	// Publication is the publication of the cacheable tables the streams
	// read (default pgshard_cache; created or extended when the stream
	// user may).
	Publication string `yaml:"publication"`
}

// Defaults of CacheConfig.
const (
	DefaultCacheMaxBytes = 256 << 20
	DefaultCacheDatabase = "postgres"
)

// serverCache is the proxy's cache and the readers of its invalidation
// streams.
type serverCache struct {
	c   *cache.Cache
	cfg CacheConfig
	// tables are the map's cacheable tables and their key columns.
	mu     sync.Mutex
	tables map[string]string
	// kick wakes the readers' manager (map change).
	kick chan struct{}
	// gen counts the maps applied; it is part of every lookup key, since
	// a map may be replaced by another of the same epoch (a reloaded map
	// file) that places keys elsewhere. lastMap is the map it counts.
	gen     atomic.Uint64
	lastMap *shardmap.Map // under mu
	stop    context.CancelFunc
	done    chan struct{}
}

// initCache creates the cache when the configuration enables it.
func (s *Server) initCache(cfg *Config) error {
	cc := cfg.Cache
	if !cc.Enabled {
		return nil
	}
	if cc.MaxBytes < 0 || cc.MaxStreamLag < 0 {
		return errors.New("cache: max_bytes and max_stream_lag must not be negative")
	}
	if cc.MaxBytes == 0 {
		cc.MaxBytes = DefaultCacheMaxBytes
	}
	if cc.MaxStreamLag == 0 {
		cc.MaxStreamLag = Duration(cache.DefaultMaxStreamLag)
	}
	if cc.Database == "" {
		cc.Database = DefaultCacheDatabase
	}
	c, err := cache.New(cache.Config{MaxBytes: cc.MaxBytes, MaxStreamLag: cc.MaxStreamLag.D()})
	if err != nil {
		return err
	}
	for _, col := range c.Collectors() {
		if err := s.metrics.reg.Register(col); err != nil {
			c.Close()
			return fmt.Errorf("cache metrics: %w", err)
		}
	}
	s.cache = &serverCache{c: c, cfg: cc, kick: make(chan struct{}, 1)}
	if m := cfg.shardMap; m != nil {
		s.cacheMapApplied(m)
	}
	return nil
}

// cacheMapApplied applies a new shard map to the cache: its epoch (older
// entries are dropped), its cacheable tables, and the readers (the
// manager replaces those whose primary or tables changed).
func (s *Server) cacheMapApplied(m *shardmap.Map) {
	sc := s.cache
	if sc == nil || m == nil {
		return
	}
	settings := map[string]cache.TableSettings{}
	tables := map[string]string{}
	for _, t := range m.Tables {
		if t.Kind == shardmap.Sharded && t.Cache.Enabled {
			settings[t.Name] = cache.TableSettings{Enabled: true, TTL: t.Cache.TTL, MaxEntryBytes: t.Cache.MaxEntryBytes}
			tables[t.Name] = t.KeyColumn
		}
	}
	sc.c.SetEpoch(m.Epoch)
	sc.c.SetTables(settings)
	sc.mu.Lock()
	sc.tables = tables
	if m != sc.lastMap && (sc.lastMap == nil || m.Epoch != sc.lastMap.Epoch || !shardmap.SameContent(m, sc.lastMap)) {
		if sc.lastMap != nil && m.Epoch == sc.lastMap.Epoch {
			// Another map under the same epoch: what was read under
			// the old one goes (new lookup keys never find it, and
			// fills begun before fail).
			sc.c.Flush()
		}
		sc.gen.Add(1)
		sc.lastMap = m
	}
	sc.mu.Unlock()
	s.cacheOn.Store(len(tables) > 0)
	select {
	case sc.kick <- struct{}{}:
	default:
	}
}

// cacheTables returns the cacheable tables (shared: do not modify).
func (sc *serverCache) cacheTables() map[string]string {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.tables
}

// startCache starts the manager of the invalidation stream readers.
func (s *Server) startCache() {
	sc := s.cache
	if sc == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	sc.stop, sc.done = cancel, make(chan struct{})
	go func() {
		defer close(sc.done)
		s.manageStreams(ctx)
	}()
}

// stopCache stops every reader (their temporary slots go with their
// connections) and closes the cache.
func (s *Server) stopCache() {
	sc := s.cache
	if sc == nil {
		return
	}
	if sc.stop != nil {
		sc.stop()
		<-sc.done
	}
	sc.c.Close()
}

// streamReader is one running reader and what it was started for.
type streamReader struct {
	started time.Time
	spec    string // primary address and tables
	cancel  context.CancelFunc
	done    chan struct{}
}

// manageStreams keeps one reader per shard of the map while tables are
// cacheable, replacing a shard's reader when its primary or the tables
// change (the old one has ended, and reported the shard down, before the
// new one starts), and feeds each stream the primaries' WAL positions
// from the health probes (cache.ShardStream.ServerPosition).
func (s *Server) manageStreams(ctx context.Context) {
	sc := s.cache
	readers := map[string]*streamReader{}
	stopReader := func(r *streamReader) {
		r.cancel()
		<-r.done
	}
	defer func() {
		for _, r := range readers {
			stopReader(r)
		}
	}()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	seen := map[string]time.Time{} // last health probe fed, per shard
	for {
		want := s.streamSpecs()
		for shard, r := range readers {
			if want[shard] != r.spec {
				stopReader(r)
				delete(readers, shard)
			}
		}
		for shard, spec := range want {
			if readers[shard] != nil {
				continue
			}
			r, err := s.startReader(ctx, shard, spec)
			if err != nil {
				s.log.Error("cache invalidation stream not started; shard bypassed", "shard", shard, "err", err)
				continue
			}
			readers[shard] = r
		}
		select {
		case <-ctx.Done():
			return
		case <-sc.kick:
		case <-tick.C:
			// A stream covers the tables that existed when it connected:
			// while one is missing (created later, a new shard), its
			// reader starts over now and then to take it in.
			want := len(sc.cacheTables())
			for _, info := range sc.c.Shards() {
				if r := readers[info.Shard]; r != nil && info.Up && len(info.Tables) < want && time.Since(r.started) > retryUncovered {
					s.log.Info("cache invalidation stream restarts to cover tables created since it started", "shard", info.Shard)
					stopReader(r)
					delete(readers, info.Shard)
				}
			}
			for _, st := range s.Health() {
				if st.Role != health.RolePrimary || !st.Up || st.InRecovery || readers[st.Shard] == nil || !st.LastProbe.After(seen[st.Shard]) {
					continue
				}
				seen[st.Shard] = st.LastProbe
				sc.c.Stream(st.Shard).ServerPosition(cache.LSN(st.LSN), st.LastProbe)
			}
		}
	}
}

// retryUncovered is how long a stream that does not cover every cacheable
// table runs before its reader starts over to take them in.
const retryUncovered = 3 * time.Second

// streamSpecs returns, per shard, what its reader must be started for
// (its primary's address and the cacheable tables); none without
// cacheable tables.
func (s *Server) streamSpecs() map[string]string {
	tables := s.cache.cacheTables()
	m := s.runtime().cfg.shardMap
	if len(tables) == 0 || m == nil {
		return nil
	}
	names := make([]string, 0, len(tables))
	for t, col := range tables {
		names = append(names, t+"("+col+")")
	}
	slices.Sort(names)
	sig := strings.Join(names, ",")
	out := make(map[string]string, len(m.Shards))
	for _, sh := range m.Shards {
		out[sh.Name] = sh.Primary.String() + " " + sig
	}
	return out
}

// startReader starts shard's reader.
func (s *Server) startReader(ctx context.Context, shard, spec string) (*streamReader, error) {
	sc := s.cache
	tables := sc.cacheTables()
	r, err := stream.New(stream.Config{
		Primary:     func() (string, error) { return s.streamConnString(shard) },
		Tables:      tables,
		Publication: sc.cfg.Publication,
		Logger:      s.log,
	}, sc.c.Stream(shard))
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	sr := &streamReader{started: time.Now(), spec: spec, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(sr.done)
		_ = r.Run(rctx)
	}()
	return sr, nil
}

// streamConnString returns the connection string of shard's primary in
// the map in use, for its invalidation stream.
func (s *Server) streamConnString(shard string) (string, error) {
	rt := s.runtime()
	m := rt.cfg.shardMap
	if m == nil {
		return "", errors.New("no shard map")
	}
	sh := m.Shard(shard)
	if sh == nil {
		return "", fmt.Errorf("shard %s is not in the map", shard)
	}
	cc := s.cache.cfg
	user, password := cc.StreamUser, ""
	if user == "" {
		user, password = rt.cfg.Backend.User, rt.cfg.Backend.Password
		if user == "" {
			for _, u := range rt.users {
				user, password = u.beUser, u.bePassword
				break
			}
		}
	}
	if cc.StreamPasswordEnv != "" {
		password = os.Getenv(cc.StreamPasswordEnv)
	}
	kv := []string{
		"host=" + quoteConnValue(sh.Primary.Host),
		"port=" + strconv.Itoa(sh.Primary.Port),
		"user=" + quoteConnValue(user),
		"dbname=" + quoteConnValue(cc.Database),
		"connect_timeout=5",
	}
	if password != "" {
		kv = append(kv, "password="+quoteConnValue(password))
	}
	b := rt.cfg.Backend
	for _, p := range [][2]string{{"sslmode", b.SSLMode}, {"sslrootcert", b.SSLRootCert}, {"sslcert", b.SSLCert}, {"sslkey", b.SSLKey}} {
		if p[1] != "" {
			kv = append(kv, p[0]+"="+quoteConnValue(p[1]))
		}
	}
	return strings.Join(kv, " "), nil
}

// quoteConnValue quotes a keyword/value connection string value.
func quoteConnValue(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}
