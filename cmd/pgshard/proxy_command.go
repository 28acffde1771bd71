package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/replication/twophase"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

type proxyOptions struct {
	configPath string
	logLevel   string
	meta       string // meta cluster API addresses
	metaToken  string
	metaCA     string
	metaCert   string
	metaKey    string
	proxyID    string
	metaListen string // embedded meta API when there is no --meta
	stderr     io.Writer
}

func newProxyCommand(stdout, stderr io.Writer) *cobra.Command {
	o := &proxyOptions{stderr: stderr}
	cmd := &cobra.Command{
		Use:   "proxy --config FILE",
		Short: "Run the proxy",
		Long: `Run the pgshard proxy with a YAML configuration (see the README's configuration reference).
SIGTERM or SIGINT shuts down gracefully; SIGHUP reloads users and pool sizes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&o.configPath, "config", "c", "", "configuration file (required)")
	cmd.Flags().StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().StringVar(&o.meta, "meta", "", "follow the shard map of the meta cluster at these API addresses (host:port[,host:port...])")
	cmd.Flags().StringVar(&o.metaToken, "meta-token", "", "bearer token of the meta cluster (default $PGSHARD_META_TOKEN)")
	cmd.Flags().StringVar(&o.metaCA, "meta-tls-ca", "", "CA of the meta servers' certificates (TLS; without it loopback addresses use plaintext)")
	cmd.Flags().StringVar(&o.metaCert, "meta-tls-cert", "", "client certificate (PEM) for meta clusters that require mutual TLS (with --meta-tls-key and --meta-tls-ca)")
	cmd.Flags().StringVar(&o.metaKey, "meta-tls-key", "", "key of --meta-tls-cert")
	cmd.Flags().StringVar(&o.proxyID, "proxy-id", "", "this proxy's ID towards the meta cluster (default: host name and listen address)")
	cmd.Flags().StringVar(&o.metaListen, "meta-listen", defaultMetaAddr,
		`without --meta, a proxy with a shard map runs an embedded single-node meta cluster (data next to the config) with its API here, for pgshard map/meta commands; "" disables it`)
	return cmd
}

func (o *proxyOptions) Validate() error {
	if o.configPath == "" {
		return usageError{errors.New("--config is required")}
	}
	return nil
}

// loadConfig reads the configuration; with --meta the shards come from
// the meta cluster's map, so the file needs none.
func (o *proxyOptions) loadConfig() (*proxy.Config, error) {
	if o.meta != "" {
		return proxy.LoadConfigFollowingMeta(o.configPath)
	}
	return proxy.LoadConfig(o.configPath)
}

func setupLogging(w io.Writer, level string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return usageError{fmt.Errorf("--log-level: %w", err)}
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})))
	return nil
}

func (o *proxyOptions) Run(ctx context.Context) error {
	if err := setupLogging(o.stderr, o.logLevel); err != nil {
		return err
	}
	cfg, err := o.loadConfig()
	if err != nil {
		return err
	}
	cfg.ReloadFunc = o.loadConfig // the admin console's RELOAD
	var follow func(context.Context, *proxy.Server)
	switch {
	case o.meta != "":
		var client *metarpc.Client
		if follow, client, err = o.followMeta(ctx, cfg); err != nil {
			return err
		}
		defer client.Close()
	case o.metaListen != "" && cfg.ShardMap() != nil:
		dir := filepath.Join(filepath.Dir(o.configPath), "pgshard-meta")
		em, err := startEmbeddedMeta(ctx, o.metaListen, dir, cfg)
		if err != nil {
			return fmt.Errorf("%w (another proxy or demo on this host? choose --meta-listen, or \"\" to disable)", err)
		}
		defer em.close()
		// The map the embedded cluster holds wins over the file's: it
		// may have been changed with pgshard map apply.
		if v := em.node.Map(); v.Map != nil && v.Epoch > cfg.ShardMap().Epoch {
			m := v.Map.Clone()
			m.Epoch = v.Epoch
			if err := cfg.UseShardMap(m); err != nil {
				return err
			}
		}
		follow = em.follow
		cfg.FollowsMeta = true // no writes before the embedded cluster confirms the map
	}
	// The meta follower outlives the graceful shutdown (the proxy keeps
	// heartbeating, failing closed and buffering while transactions
	// finish), and then deregisters.
	followCtx, stopFollow := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopFollow() // before the wait: ends the meta follower
	return runProxy(ctx, cfg, func(srv *proxy.Server) {
		if follow != nil {
			wg.Go(func() { follow(followCtx, srv) })
		}
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		go func() {
			defer signal.Stop(hup)
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					ncfg, err := o.loadConfig()
					if err == nil {
						err = srv.Reload(ncfg)
					}
					if err != nil {
						slog.Error("reload failed; keeping the old configuration", "err", err)
					}
				}
			}
		}()
	})
}

// runProxy serves cfg until ctx ends, then shuts down gracefully. started
// runs once the listeners are open.
func runProxy(ctx context.Context, cfg *proxy.Config, started func(*proxy.Server)) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default().With("component", "proxy")
	}
	srv, err := proxy.NewServer(cfg)
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	adminDone := make(chan error, 1)
	if cfg.AdminListen != "" {
		ln, err := net.Listen("tcp", cfg.AdminListen)
		if err != nil {
			_ = srv.Close()
			stopAdmin()
			return fmt.Errorf("admin listen on %s: %w", cfg.AdminListen, err)
		}
		go func() { adminDone <- srv.ServeAdmin(adminCtx, ln) }()
	} else {
		adminDone <- nil
	}
	slog.Info("pgshard proxy listening", "addr", srv.Addr().String(), "admin", cfg.AdminListen, "pool_mode", cfg.PoolMode)
	if started != nil {
		started(srv)
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(context.WithoutCancel(ctx)) }()
	select {
	case <-ctx.Done():
	case err := <-serveDone:
		srv.WaitShutdown() // the admin console's SHUTDOWN, if it was that
		stopAdmin()
		<-adminDone
		return err
	}
	slog.Info("shutting down", "timeout", cfg.ShutdownTimeout.D())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.D())
	defer cancel()
	_ = srv.Shutdown(sctx)
	err = <-serveDone
	stopAdmin()
	if aerr := <-adminDone; err == nil {
		err = aerr
	}
	return err
}

// metaHeartbeat is how often a proxy reports to the meta cluster (well
// within the default 10 s lease).
const metaHeartbeat = 2 * time.Second

// followMeta prepares a proxy that follows the meta cluster's shard map:
// it starts from the cluster's current map, or — when the cluster cannot
// be reached — from the map it saved last time (map_state_file, by
// default next to the configuration file, which only holds maps from the
// cluster), or — on a first start without one — from shard_map_file, and
// returns what keeps it on the cluster's map while it runs. The shards'
// servers always come from that map; until the cluster has confirmed it
// (FollowMeta), the proxy refuses writes.
func (o *proxyOptions) followMeta(ctx context.Context, cfg *proxy.Config) (func(context.Context, *proxy.Server), *metarpc.Client, error) {
	token := o.metaToken
	if token == "" {
		token = os.Getenv("PGSHARD_META_TOKEN")
	}
	var addrs []string
	for _, a := range strings.Split(o.meta, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	// The incarnation names this run of the process to meta: two-phase
	// recovery counts a predecessor under the same ID as dead at once.
	copts := metarpc.ClientOptions{Token: token, Incarnation: twophase.Incarnation()}
	if (o.metaCert == "") != (o.metaKey == "") || o.metaCert != "" && o.metaCA == "" {
		return nil, nil, usageError{errors.New("--meta-tls-cert and --meta-tls-key go together, with --meta-tls-ca")}
	}
	if o.metaCA != "" {
		tc, err := metarpc.ClientTLSConfig(o.metaCA, o.metaCert, o.metaKey, "")
		if err != nil {
			return nil, nil, err
		}
		copts.TLS = tc
	} else if allLoopback(addrs) {
		copts.Insecure = true
	} else {
		return nil, nil, usageError{errors.New("--meta-tls-ca is needed for meta addresses that are not loopback")}
	}
	client, err := metarpc.NewClient(addrs, copts)
	if err != nil {
		return nil, nil, err
	}
	if cfg.MapStateFile == "" {
		cfg.MapStateFile = filepath.Join(filepath.Dir(o.configPath), "pgshard-map-state.yaml")
	}
	if cfg.ShardMap() == nil && len(cfg.Shards) > 0 {
		slog.Info("the servers of the shards come from the meta cluster's map; shards in the configuration only set a database", "shards", len(cfg.Shards))
	}
	gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	v, err := client.GetMap(gctx)
	cancel()
	if err == nil && v.Map == nil {
		err = errors.New("it holds no shard map yet")
	}
	var start *shardmap.Map
	switch {
	case err == nil:
		start = v.Map.Clone()
		start.Epoch = v.Epoch
	default:
		b, ferr := os.ReadFile(cfg.MapStateFile)
		if ferr == nil {
			start, ferr = shardmap.ParseYAML(b)
		}
		switch {
		case ferr == nil:
			slog.Warn("meta cluster unreachable; starting from the saved shard map", "file", cfg.MapStateFile, "epoch", start.Epoch, "err", err)
		case cfg.ShardMap() != nil:
			// A first start: shard_map_file is the seed until meta answers.
			slog.Warn("meta cluster unreachable and no saved shard map; starting from shard_map_file", "file", cfg.ShardMapFile, "epoch", cfg.ShardMap().Epoch, "err", err)
		default:
			_ = client.Close()
			return nil, nil, fmt.Errorf("no shard map to start from: the meta cluster (%s) answered: %v; and %s: %w", o.meta, err, cfg.MapStateFile, ferr)
		}
	}
	if start != nil {
		if err := cfg.UseShardMap(start); err != nil {
			_ = client.Close()
			return nil, nil, fmt.Errorf("shard map epoch %d: %w", start.Epoch, err)
		}
		if err := cfg.Validate(); err != nil {
			_ = client.Close()
			return nil, nil, err
		}
	}
	id := o.proxyID
	return func(ctx context.Context, srv *proxy.Server) {
		if id == "" {
			host, _ := os.Hostname()
			id = host + "/" + srv.Addr().String()
		}
		srv.FollowMeta(ctx, client, id, metaHeartbeat)
	}, client, nil
}
