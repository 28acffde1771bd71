package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/internal/controlplane"
	"github.com/pgshard/pgshard/shardmap/meta"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// `pgshard meta run`: one member of the meta cluster — a Raft node, its
// gRPC API and its leader-side controllers, assembled by
// internal/controlplane.

type metaRunOptions struct {
	id          string
	raftAddr    string
	advertise   string
	apiAddr     string
	dataDir     string
	bootstrap   bool
	token       string
	tlsCert     string
	tlsKey      string
	tlsClientCA string
	allowNoAuth bool
	logLevel    string
	heartbeat   time.Duration
	election    time.Duration
	failover    metaFailoverOptions
	twoPhase    metaTwoPhaseOptions
	metricsAddr string
	stderr      io.Writer
}

func init() {
	metaSubcommands = append(metaSubcommands, newMetaRunCommand)
}

func newMetaRunCommand() *cobra.Command {
	o := &metaRunOptions{}
	cmd := &cobra.Command{
		Use:   "run --id ID --raft-addr HOST:PORT --api-addr HOST:PORT --data-dir DIR [--bootstrap]",
		Short: "Run a member of the meta cluster (Raft node and gRPC API)",
		Long: `Run one member of the pgshard meta cluster: a Raft node holding the shard map
(durable log and snapshots in --data-dir) and the gRPC API proxies and the CLI use.
Start the first member with --bootstrap (once, on an empty data dir); start the
others without it and add them from the CLI: pgshard meta join ID RAFT_ADDR.
The API needs a token (--token or PGSHARD_META_TOKEN) and/or mutual TLS; without
either it refuses to start unless --allow-unauthenticated (loopback clients only).

The leader checks every primary of the map and fails over one that fails its
checks for --failover-after (and that proxies also report unreachable): its most
advanced replica is promoted, the others follow it, the old primary is fenced.
It connects to PostgreSQL as --pg-user with the password in ` + envMetaPGPassword + `,
also (with --no-failover too) to count the rows of key intervals that
"pgshard map apply" would give to another shard.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("meta run takes no arguments, got %q", args)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.stderr = cmd.ErrOrStderr()
			if o.token == "" {
				o.token = os.Getenv(envMetaToken) // not a flag default: --help must not show it
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.id, "id", "", "member ID, unique in the cluster (required)")
	f.StringVar(&o.raftAddr, "raft-addr", "127.0.0.1:6441", "address the Raft transport listens on")
	f.StringVar(&o.advertise, "advertise", "", "Raft address other members dial (default: --raft-addr)")
	f.StringVar(&o.apiAddr, "api-addr", defaultMetaAddr, "address the gRPC API listens on")
	f.StringVar(&o.dataDir, "data-dir", "", "directory of the Raft log, stable store and snapshots (required)")
	f.BoolVar(&o.bootstrap, "bootstrap", false, "bootstrap a new single-voter cluster (first member, empty data dir)")
	f.StringVar(&o.token, "token", "", "bearer token clients must present (env "+envMetaToken+", which keeps it out of the process list)")
	f.StringVar(&o.tlsCert, "tls-cert", "", "server certificate (PEM) for the API")
	f.StringVar(&o.tlsKey, "tls-key", "", "server key (PEM)")
	f.StringVar(&o.tlsClientCA, "tls-client-ca", "", "CA whose client certificates are required (mutual TLS)")
	f.BoolVar(&o.allowNoAuth, "allow-unauthenticated", false, "serve without credentials (loopback clients only; for local demos)")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.DurationVar(&o.heartbeat, "heartbeat-timeout", 500*time.Millisecond, "Raft heartbeat timeout: how long a follower waits for the leader before starting an election")
	f.DurationVar(&o.election, "election-timeout", 500*time.Millisecond, "Raft election timeout")
	o.failover.addFlags(f)
	o.twoPhase.addFlags(f)
	f.StringVar(&o.metricsAddr, "metrics-listen", "", "address of an HTTP /metrics endpoint (Prometheus; behind the API token when there is one, HTTPS with --tls-cert); empty: none")
	return cmd
}

func (o *metaRunOptions) Validate() error {
	switch {
	case o.id == "":
		return usageError{errors.New("--id is required")}
	case o.dataDir == "":
		return usageError{errors.New("--data-dir is required")}
	case (o.tlsCert == "") != (o.tlsKey == ""):
		return usageError{errors.New("--tls-cert and --tls-key go together")}
	case o.tlsClientCA != "" && o.tlsCert == "":
		return usageError{errors.New("--tls-client-ca needs --tls-cert and --tls-key")}
	case o.token == "" && o.tlsClientCA == "" && !o.allowNoAuth:
		return usageError{errors.New("the API needs credentials: --token (or PGSHARD_META_TOKEN) and/or --tls-client-ca; --allow-unauthenticated only for local demos")}
	}
	return o.twoPhase.validate()
}

func (o *metaRunOptions) Run(ctx context.Context) error {
	if err := setupLogging(o.stderr, o.logLevel); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", o.apiAddr)
	if err != nil {
		return fmt.Errorf("meta API: listen on %s: %w", o.apiAddr, err)
	}
	cfg := controlplane.Config{
		Node: meta.Config{
			ID:            o.id,
			RaftAddr:      o.raftAddr,
			AdvertiseAddr: o.advertise,
			DataDir:       o.dataDir,
			Bootstrap:     o.bootstrap,
			// A new leader within about two heartbeat timeouts of the old
			// one's death (pre-vote waits for a second follower to time out).
			HeartbeatTimeout:   o.heartbeat,
			ElectionTimeout:    o.election,
			LeaderLeaseTimeout: o.heartbeat / 2,
		},
		API:      lis,
		Server:   metarpc.ServerOptions{Token: o.token, AllowUnauthenticated: o.allowNoAuth},
		Failover: o.failover.config(),
		PG:       o.failover.login(),
		Reshard:  o.failover.reshard(),
		TwoPhase: o.twoPhase.config(),
	}
	if o.tlsCert != "" {
		if cfg.Server.TLS, err = metarpc.ServerTLSConfig(o.tlsCert, o.tlsKey, o.tlsClientCA); err != nil {
			lis.Close()
			return err
		}
		cfg.Server.RequireClientCert = o.tlsClientCA != ""
	}
	if o.metricsAddr != "" {
		mln, err := net.Listen("tcp", o.metricsAddr)
		if err != nil {
			lis.Close()
			return fmt.Errorf("meta metrics: listen on %s: %w", o.metricsAddr, err)
		}
		if o.tlsCert != "" {
			// HTTPS with the API's certificate (no client certificate
			// asked: scrapers present the token).
			tc, err := metarpc.ServerTLSConfig(o.tlsCert, o.tlsKey, "")
			if err != nil {
				mln.Close()
				lis.Close()
				return fmt.Errorf("meta metrics: %w", err)
			}
			mln = tls.NewListener(mln, tc)
		}
		cfg.Metrics = &controlplane.MetricsConfig{Listener: mln, Token: o.token}
	}
	member, err := controlplane.New(ctx, cfg, slog.Default())
	if err != nil {
		return err
	}
	defer member.Close()
	slog.Info("meta member serving", "id", o.id, "api", member.Addr(), "raft", member.Node().Addr())
	return member.Wait(ctx)
}
