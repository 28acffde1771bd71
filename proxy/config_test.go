package proxy_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
	"github.com/pgshard/pgshard/wire/auth"
)

func TestConfigDefaultsAndEnv(t *testing.T) {
	v, _ := auth.NewSCRAMVerifier("pw", nil, 4096)
	t.Setenv("PGSHARD_BACKEND_PASSWORD", "from-env")
	t.Setenv("APP_VERIFIER", v.String())
	cfg, err := proxy.ParseConfig([]byte(`
users:
  - {name: app, password_env: APP_VERIFIER}
shards:
  - {host: db.internal}
pool: {wait_timeout: 250ms}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:6432" || cfg.PoolMode != proxy.PoolTransaction || cfg.TLS.Mode != "disable" {
		t.Errorf("defaults: %+v", cfg)
	}
	if cfg.Shards[0].Name != "s0" || cfg.Shards[0].Port != 5432 {
		t.Errorf("shard defaults: %+v", cfg.Shards[0])
	}
	if cfg.Backend.Password != "from-env" || cfg.Users[0].Password != v.String() {
		t.Errorf("environment not applied")
	}
	if cfg.Pool.WaitTimeout.D() != 250*time.Millisecond || cfg.Limits.StartupTimeout.D() != 10*time.Second {
		t.Errorf("durations: %v %v", cfg.Pool.WaitTimeout.D(), cfg.Limits.StartupTimeout.D())
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	cases := map[string]string{
		"unknown key":            "listen: 127.0.0.1:1\nnope: 1\nusers: [{name: a, auth: trust}]\nshards: [{}]\n",
		"plain password":         "users: [{name: a, password: hunter2}]\nshards: [{}]\n",
		"md5 verifier, scram":    "users: [{name: a, password: md5a3556571e93b0d20722ba62be61e8c2d}]\nshards: [{}]\n",
		"bad pool mode":          "pool_mode: statement\nusers: [{name: a, auth: trust}]\nshards: [{}]\n",
		"duplicate shard":        "users: [{name: a, auth: trust}]\nshards: [{name: x}, {name: x}]\n",
		"tls without cert":       "tls: {mode: require}\nusers: [{name: a, auth: trust}]\nshards: [{}]\n",
		"bad duration":           "pool: {wait_timeout: soon}\nusers: [{name: a, auth: trust}]\nshards: [{}]\n",
		"duplicate user":         "users: [{name: a, auth: trust}, {name: a, auth: trust}]\nshards: [{}]\n",
		"bad cross_shard_writes": "users: [{name: a, auth: trust, cross_shard_writes: never}]\nshards: [{}]\n",
	}
	want := map[string]string{
		"unknown key": "nope", "plain password": "users[0].password", "md5 verifier, scram": "users[0].password",
		"bad pool mode": "pool_mode", "duplicate shard": "duplicate shard", "tls without cert": "cert_file",
		"bad duration": "soon", "duplicate user": "duplicate", "bad cross_shard_writes": "users[0].cross_shard_writes",
	}
	for name, text := range cases {
		_, err := proxy.ParseConfig([]byte(text))
		if err == nil || !strings.Contains(err.Error(), want[name]) {
			t.Errorf("%s: want an error mentioning %q, got %v", name, want[name], err)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error repeats the password: %v", name, err)
		}
	}
}

// TestConfigShardsFromMap: a configuration that follows meta needs no
// shards (one that does not, does); with a shard map the shards' servers
// are the map's primaries, and a configured shard only keeps its database.
func TestConfigShardsFromMap(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pgshard.yaml")
	if err := os.WriteFile(path, []byte("users: [{name: app, auth: trust}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := proxy.LoadConfig(path); err == nil || !strings.Contains(err.Error(), "shards:") {
		t.Errorf("LoadConfig without shards: %v, want an error naming shards", err)
	}
	cfg, err := proxy.LoadConfigFollowingMeta(path)
	if err != nil {
		t.Fatalf("a configuration following meta without shards: %v", err)
	}
	if !cfg.FollowsMeta || len(cfg.Shards) != 0 {
		t.Errorf("FollowsMeta %v, shards %+v", cfg.FollowsMeta, cfg.Shards)
	}

	cfg, err = proxy.ParseConfig([]byte(`
users: [{name: app, auth: trust}]
shards:
  - {name: s0, host: old.internal, port: 5433, database: app0}
`))
	if err != nil {
		t.Fatal(err)
	}
	m := shardmaptest.New().Epoch(3).Shard("s0", "new.internal:5432").Shard("s1", "other.internal:5432").
		Range("d").Table("public.t", "k").Map(t)
	if err := cfg.UseShardMap(m); err != nil {
		t.Fatal(err)
	}
	want := []proxy.ShardConfig{
		{Name: "s0", Host: "new.internal", Port: 5432, Database: "app0"},
		{Name: "s1", Host: "other.internal", Port: 5432},
	}
	if !slices.Equal(cfg.Shards, want) {
		t.Errorf("shards with a map: %+v, want %+v", cfg.Shards, want)
	}
}

// TestConfigBackendTimeouts: the server connections' keepalive and user
// timeout settings have defaults well under failover detection plus the
// buffer window, take durations, and refuse negative intervals or counts.
func TestConfigBackendTimeouts(t *testing.T) {
	base := "users: [{name: a, auth: trust}]\nshards: [{}]\n"
	cfg, err := proxy.ParseConfig([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Backend
	if b.AckTimeout.D() != 5*time.Second || b.KeepAliveIdle.D() != 2*time.Second || b.KeepAliveInterval.D() != time.Second || b.KeepAliveCount != 3 {
		t.Errorf("defaults: user timeout %s, keepalive %s/%s/%d", b.AckTimeout.D(), b.KeepAliveIdle.D(), b.KeepAliveInterval.D(), b.KeepAliveCount)
	}
	if limit := cfg.Buffer.Window.D() + 2*time.Second; b.AckTimeout.D() >= limit || b.KeepAliveIdle.D()+time.Duration(b.KeepAliveCount)*b.KeepAliveInterval.D() >= limit {
		t.Errorf("defaults not under failover detection plus buffer.window (%s)", limit)
	}
	cfg, err = proxy.ParseConfig([]byte(base + "backend: {ack_timeout: 1500ms, keepalive_idle: -1s, keepalive_interval: 3s, keepalive_count: 9}\n"))
	if err != nil {
		t.Fatal(err)
	}
	b = cfg.Backend
	if b.AckTimeout.D() != 1500*time.Millisecond || b.KeepAliveIdle.D() != -time.Second || b.KeepAliveInterval.D() != 3*time.Second || b.KeepAliveCount != 9 {
		t.Errorf("configured: %+v", b)
	}
	for text, field := range map[string]string{
		"backend: {keepalive_interval: -1s}\n": "backend.keepalive_interval",
		"backend: {keepalive_count: -2}\n":     "backend.keepalive_count",
	} {
		if _, err := proxy.ParseConfig([]byte(base + text)); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%q: want an error naming %s, got %v", text, field, err)
		}
	}
}
