package proxy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/replication/failover"
	"github.com/pgshard/pgshard/shardmap"
)

// Live shard map changes. A new map (from the meta cluster, or a file)
// replaces the runtime's router at once: the next statement of every
// session routes by it — except statements of a transaction that began
// under the previous map, which keep routing by the map the transaction
// started with until it ends (session.routerFor), so a transaction never
// sees two maps. Shards whose primary moved get new pools.
//
// A server that stops being its shard's primary gets nothing more from
// the proxy, and nothing it sends counts: when the map replaces a shard's
// primary (the promote of a failover or switchover), fences it (a
// failover at its "fence" step) or lists it among the shard's fenced
// servers, every connection to it — idle or in use by a session — is
// reset (pool.Pool.Abort) before ApplyMap returns, so before the proxy
// acknowledges the epoch. Sessions in use of one get FATAL 08006 and
// never a reply the server sent after the reset began. A switchover's
// "drain" step aborts nothing: open transactions finish there. Other
// pools of servers that leave the map close as their connections come
// back.

// ApplyMap makes m the shard map the proxy routes by. m must be valid and
// newer than the map in use (a map with the same or an older epoch is
// ignored and ApplyMap reports false). When the configuration names a
// map_state_file, the map is saved there first (atomically), so a proxy
// restarted while the meta cluster is unreachable starts from it.
func (s *Server) ApplyMap(m *shardmap.Map) (bool, error) { return s.applyMap(m, false) }

// applyMap is ApplyMap; with force, a map with the same or an older epoch
// replaces the map in use too when it differs from it (the meta cluster's
// map replaces one the proxy started with), and one equal to it is only
// saved to map_state_file (false: nothing changed).
func (s *Server) applyMap(m *shardmap.Map, force bool) (bool, error) {
	if err := m.Validate(); err != nil {
		return false, fmt.Errorf("apply map epoch %d: %w", m.Epoch, err)
	}
	s.mapMu.Lock()
	defer s.mapMu.Unlock()
	old := s.runtime()
	if cur := old.cfg.shardMap; cur != nil && m.Epoch <= cur.Epoch {
		if !force {
			return false, nil
		}
		if same, err := sameMap(cur, m); err != nil || same {
			if err == nil && old.cfg.MapStateFile != "" {
				err = saveMap(old.cfg.MapStateFile, m)
			}
			return false, err
		}
	}
	cfg := *old.cfg
	cfg.shardMap = m
	cfg.Shards = mapShards(m, old.cfg.Shards)
	if cfg.DefaultShard == "" || !hasShard(cfg.Shards, cfg.DefaultShard) {
		cfg.DefaultShard = cfg.Shards[0].Name
	}
	if err := cfg.Validate(); err != nil {
		return false, fmt.Errorf("apply map epoch %d: %w", m.Epoch, err)
	}
	if cfg.MapStateFile != "" {
		if err := saveMap(cfg.MapStateFile, m); err != nil {
			return false, err
		}
	}
	rt, err := s.newRuntime(&cfg)
	if err != nil {
		return false, fmt.Errorf("apply map epoch %d: %w", m.Epoch, err)
	}
	for name := range rt.users {
		if o, ok := old.users[name]; ok {
			rt.users[name] = o // keep client counts and credentials
		}
	}
	s.rt.Store(rt)
	s.cacheMapApplied(m)
	s.noteMapChange()
	s.retirePools(old.cfg.Shards, &cfg)
	s.metrics.mapEpoch.Set(float64(m.Epoch))
	s.log.Info("shard map applied", "epoch", m.Epoch, "shards", len(m.Shards))
	return true, nil
}

// sameMap reports whether a and b are the same map (epoch included).
func sameMap(a, b *shardmap.Map) (bool, error) {
	ya, err := a.YAML()
	if err != nil {
		return false, fmt.Errorf("compare maps: %w", err)
	}
	yb, err := b.YAML()
	if err != nil {
		return false, fmt.Errorf("compare maps: %w", err)
	}
	return bytes.Equal(ya, yb), nil
}

// ackedEpoch is the epoch the proxy may acknowledge to the meta cluster:
// that of the map in use once ApplyMap is done with it — in particular,
// once the connections to the servers it replaced or fenced are reset
// (MapEpoch already names the new map while they are).
func (s *Server) ackedEpoch() uint64 {
	s.mapMu.Lock()
	defer s.mapMu.Unlock()
	return s.MapEpoch()
}

// MapEpoch returns the epoch of the shard map in use (0 without a map).
func (s *Server) MapEpoch() uint64 {
	if m := s.runtime().cfg.shardMap; m != nil {
		return m.Epoch
	}
	return 0
}

// mapShards lists the shards of m as shard configurations: each shard's
// primary, keeping the database override of a configured shard of the
// same name.
func mapShards(m *shardmap.Map, old []ShardConfig) []ShardConfig {
	out := make([]ShardConfig, 0, len(m.Shards))
	for _, sh := range m.Shards {
		sc := ShardConfig{Name: sh.Name, Host: sh.Primary.Host, Port: sh.Primary.Port}
		for _, o := range old {
			if o.Name == sh.Name {
				sc.Database = o.Database
			}
		}
		out = append(out, sc)
	}
	return out
}

func hasShard(shards []ShardConfig, name string) bool {
	for _, sh := range shards {
		if sh.Name == name {
			return true
		}
	}
	return false
}

// retirePools aborts the pools of servers that stopped being their
// shard's primary or are fenced in cfg's map (see above), and closes the
// pools of servers that are no longer an endpoint (primary or replica)
// of their shard in cfg, or whose database override changed: new
// sessions get new pools; connections in use go back to the closed pool,
// which closes them. It returns when the aborted connections are reset.
func (s *Server) retirePools(before []ShardConfig, cfg *Config) {
	keep := map[string]bool{} // shard + "\x00" + addr
	db := map[string]string{}
	primary := map[string]string{}
	for _, sc := range cfg.Shards {
		addr := sc.address()
		keep[sc.Name+"\x00"+addr] = true
		db[sc.Name] = sc.Database
		primary[sc.Name] = addr
	}
	abort := map[string]string{} // addr → why
	for _, sc := range before {
		addr := sc.address()
		if now, ok := primary[sc.Name]; ok && now != addr {
			abort[addr] = fmt.Sprintf("no longer the primary of shard %s", sc.Name)
		}
	}
	if m := cfg.shardMap; m != nil {
		for _, sh := range m.Shards {
			for _, r := range sh.Replicas {
				keep[sh.Name+"\x00"+r.String()] = true
			}
			for _, f := range sh.Fenced {
				abort[f.String()] = fmt.Sprintf("fenced in shard %s", sh.Name)
			}
			if sw := sh.Switch; sw != nil && sw.Kind == shardmap.Failover && sw.Step == failover.StepFence {
				abort[sw.From.String()] = fmt.Sprintf("fenced by the failover of shard %s", sh.Name)
				abort[sh.Primary.String()] = fmt.Sprintf("fenced by the failover of shard %s", sh.Name)
			}
		}
	}
	changedDB := map[string]bool{}
	for _, sc := range before {
		if d, ok := db[sc.Name]; !ok || d != sc.Database {
			changedDB[sc.Name] = true
		}
	}
	var aborted []*pool.Pool
	s.mu.Lock()
	for k, p := range s.pools {
		_, abortIt := abort[k.addr]
		if !abortIt && keep[k.shard+"\x00"+k.addr] && !changedDB[k.shard] {
			continue
		}
		delete(s.pools, k)
		delete(s.params, p)
		if abortIt {
			aborted = append(aborted, p)
			continue
		}
		// Close waits until the connections in use come back (they are
		// closed then): in the background, owned by s.bg.
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			p.Close()
		}()
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range aborted {
		wg.Go(func() {
			before := p.Stats().Aborted
			p.Abort()
			n := p.Stats().Aborted - before
			if n == 0 {
				return
			}
			s.log.Warn("server connections aborted", "server", p.Config().Addr, "user", p.Config().User,
				"database", p.Config().Database, "connections", n, "why", abort[p.Config().Addr])
			s.metrics.abortedConns.Add(float64(n))
		})
	}
	wg.Wait()
	for _, p := range aborted {
		// The readers of the reset connections end as their owners
		// learn of it: wait for them in the background.
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			p.Close()
		}()
	}
}

// saveMap writes m's YAML to path atomically (a temporary file renamed).
func saveMap(path string, m *shardmap.Map) error {
	b, err := m.YAML()
	if err != nil {
		return fmt.Errorf("save map: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".pgshard-map-*")
	if err != nil {
		return fmt.Errorf("save map: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("save map: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save map: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save map: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save map: %w", err)
	}
	return nil
}
