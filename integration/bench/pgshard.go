package main

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"gopkg.in/yaml.v3"

	"github.com/pgshard/pgshard/wire/auth"
)

// pgshardConfig is the part of the proxy's YAML configuration (see
// proxy.Config) the benchmark sets. It is written by hand rather than with
// proxy.Config so that the file shows exactly what the benchmark chose.
type pgshardConfig struct {
	Listen          string         `yaml:"listen"`
	AdminListen     string         `yaml:"admin_listen"`
	PoolMode        string         `yaml:"pool_mode"`
	ShutdownTimeout string         `yaml:"shutdown_timeout"`
	Users           []pgshardUser  `yaml:"users"`
	Shards          []pgshardShard `yaml:"shards,omitempty"`
	ShardMapFile    string         `yaml:"shard_map_file,omitempty"`
	Backend         pgshardBackend `yaml:"backend"`
	Pool            pgshardPool    `yaml:"pool"`
	Limits          *pgshardLimits `yaml:"limits,omitempty"`
}

type pgshardLimits struct {
	MaxClientConn   int  `yaml:"max_client_conn"`
	ParkIdleClients bool `yaml:"park_idle_clients"` // written either way: on by default since 2026-12-07
}

type pgshardUser struct {
	Name     string `yaml:"name"`
	Auth     string `yaml:"auth"`
	Password string `yaml:"password"`
}

type pgshardShard struct {
	Name string `yaml:"name"`
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
}

type pgshardBackend struct {
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	SSLMode  string `yaml:"sslmode"`
}

type pgshardPool struct {
	Size        int    `yaml:"size"`
	WaitTimeout string `yaml:"wait_timeout"`
}

// startPgshard writes a configuration into dir and starts the pgshard
// binary with it: the shards given, or with mapFile the shard map's
// (statements routed by key), transaction pooling, poolSize backend
// connections per shard, SCRAM authentication of user, no admin listener;
// env is added to the process's environment (GOMAXPROCS=1, say).
func startPgshard(ctx context.Context, bin, dir string, shards []pgshardShard, mapFile string, poolSize int, user, password string, env ...string) (*child, string, error) {
	return startPgshardWith(ctx, bin, dir, shards, mapFile, poolSize, user, password, nil, env...)
}

// clientAuth returns the configuration edit that makes pgshard's user
// authenticate with method ("md5"), or nil for SCRAM (the default).
func clientAuth(method string) func(*pgshardConfig) {
	if method != "md5" {
		return nil
	}
	return func(c *pgshardConfig) {
		sum := md5.Sum([]byte(benchPassword + benchUser))
		c.Users[0].Auth, c.Users[0].Password = "md5", "md5"+hex.EncodeToString(sum[:])
	}
}

// startPgshardWith is startPgshard with edit, when not nil, changing the
// configuration before it is written.
func startPgshardWith(ctx context.Context, bin, dir string, shards []pgshardShard, mapFile string, poolSize int, user, password string, edit func(*pgshardConfig), env ...string) (*child, string, error) {
	verifier, err := auth.NewSCRAMVerifier(password, nil, 0)
	if err != nil {
		return nil, "", err
	}
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cfg := pgshardConfig{
		Listen:          addr,
		AdminListen:     "",
		PoolMode:        "transaction",
		ShutdownTimeout: "5s",
		Users:           []pgshardUser{{Name: user, Auth: string(auth.SCRAMSHA256), Password: verifier.String()}},
		Shards:          shards,
		ShardMapFile:    mapFile,
		Backend:         pgshardBackend{User: user, Password: password, SSLMode: "disable"},
		Pool:            pgshardPool{Size: poolSize, WaitTimeout: "30s"},
	}
	if edit != nil {
		edit(&cfg)
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("pgshard config: %w", err)
	}
	cfgPath := filepath.Join(dir, "pgshard.yaml")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		return nil, "", fmt.Errorf("write pgshard config: %w", err)
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return nil, "", err
	}
	args := []string{"proxy", "--config", cfgPath, "--log-level", "warn"}
	if mapFile != "" {
		// The embedded meta cluster on a port of its own: two proxies
		// (pgshard and its baseline) would both want its default one.
		metaPort, err := freePort()
		if err != nil {
			return nil, "", err
		}
		args = append(args, "--meta-listen=127.0.0.1:"+strconv.Itoa(metaPort))
	}
	cmd := exec.Command(abs, args...)
	cmd.Dir = dir
	// The backend password is in the file; keep the environment from
	// overriding it.
	cmd.Env = append(append(os.Environ(), "PGSHARD_BACKEND_PASSWORD="+password), env...)
	c, err := startChild("pgshard", cmd, filepath.Join(dir, "pgshard.log"))
	if err != nil {
		return nil, "", err
	}
	if err := c.waitListening(ctx, addr); err != nil {
		c.stop(0)
		return nil, "", err
	}
	return c, addr, nil
}
