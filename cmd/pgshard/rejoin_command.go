package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/replication/pgadmin"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// `pgshard shards rejoin`: bring a fenced former primary back as a replica.

type rejoinOptions struct {
	conn          metaConnOptions
	shard         string
	endpoint      string
	dataDir       string
	method        string
	binDir        string
	appName       string
	pgUser        string
	pgPasswordEnv string
	pgSSLMode     string
	wait          time.Duration
	stdout        io.Writer
}

func newShardsRejoinCommand(stdout io.Writer) *cobra.Command {
	o := &rejoinOptions{stdout: stdout}
	cmd := &cobra.Command{
		Use:   "rejoin --shard SHARD --endpoint HOST:PORT [--data-dir DIR]",
		Short: "Re-join a fenced former primary as a replica of its shard",
		Long: `Bring back a former primary that a failover or switchover fenced. It gets no
traffic while fenced; rejoin makes it a streaming replica of the shard's
current primary and then lists it as a replica again.

With --data-dir (run on the server's host, with the server stopped) the data
directory is rebuilt first: pg_rewind when the server allows it (wal_log_hints
or data checksums), else a fresh pg_basebackup (the old directory is kept
next to it); its own configuration files are kept, standby.signal and
primary_conninfo point at the current primary. Start the server afterwards.
Without --data-dir the server must already have been rebuilt by other means.

Either way the command then waits (up to --wait) until the server streams
from the current primary, and only then changes the map. It connects to
PostgreSQL as --pg-user with the password in ` + envMetaPGPassword + `.`,
		Example:           `  pgshard shards rejoin --shard s1 --endpoint 10.0.0.11:5432 --data-dir /var/lib/postgresql/15/main`,
		Args:              usageArgs(cobra.NoArgs),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.conn.Complete(cmd)
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.conn.addFlags(cmd)
	fs := cmd.Flags()
	fs.StringVar(&o.shard, "shard", "", "the shard (required)")
	fs.StringVar(&o.endpoint, "endpoint", "", "the fenced server, host:port as in the map (required)")
	fs.StringVar(&o.dataDir, "data-dir", "", "rebuild this data directory (the stopped server's) as a replica first")
	fs.StringVar(&o.method, "method", pgadmin.MethodAuto, "how to rebuild: auto (pg_rewind, else a base backup), rewind or basebackup")
	fs.StringVar(&o.binDir, "pg-bin", "", "directory of pg_rewind and pg_basebackup (default: PATH, then /usr/lib/postgresql/VERSION/bin)")
	fs.StringVar(&o.appName, "application-name", "", "application_name of the replica's primary_conninfo (default: the host name)")
	fs.StringVar(&o.pgUser, "pg-user", "postgres", "PostgreSQL role for the rebuild and the checks (replication and superuser)")
	fs.StringVar(&o.pgPasswordEnv, "pg-password-env", envMetaPGPassword, "environment variable holding that role's password")
	fs.StringVar(&o.pgSSLMode, "pg-sslmode", "prefer", "libpq sslmode for the checks")
	fs.DurationVar(&o.wait, "wait", 10*time.Minute, "how long to wait for the server to stream from the primary")
	_ = cmd.MarkFlagDirname("data-dir")
	_ = cmd.MarkFlagDirname("pg-bin")
	return cmd
}

// Validate checks the flags.
func (o *rejoinOptions) Validate() error {
	if err := o.conn.Validate(); err != nil {
		return err
	}
	switch {
	case strings.TrimSpace(o.shard) == "":
		return usageError{errors.New("shards rejoin: --shard is required")}
	case o.endpoint == "":
		return usageError{errors.New("shards rejoin: --endpoint is required")}
	case o.wait <= 0:
		return usageError{errors.New("shards rejoin: --wait must be positive")}
	}
	if _, _, err := net.SplitHostPort(o.endpoint); err != nil {
		return usageError{fmt.Errorf("shards rejoin: --endpoint %q is not host:port: %w", o.endpoint, err)}
	}
	switch o.method {
	case pgadmin.MethodAuto, pgadmin.MethodRewind, pgadmin.MethodBasebackup:
	default:
		return usageError{fmt.Errorf("shards rejoin: --method %q is not auto, rewind or basebackup", o.method)}
	}
	return nil
}

// fencedIn returns the shard of m named o.shard with o.endpoint fenced,
// or an error saying what is wrong.
func (o *rejoinOptions) fencedIn(m *shardmap.Map) (*shardmap.Shard, error) {
	if m == nil {
		return nil, errors.New("the meta cluster has no shard map")
	}
	sh := m.Shard(o.shard)
	switch {
	case sh == nil:
		return nil, fmt.Errorf("shard %s is not in the map (epoch %d)", o.shard, m.Epoch)
	case !slices.ContainsFunc(sh.Fenced, func(e shardmap.Endpoint) bool { return e.String() == o.endpoint }):
		return nil, fmt.Errorf("%s is not fenced in shard %s (epoch %d); fenced: %v", o.endpoint, o.shard, m.Epoch, sh.Fenced)
	case sh.Switch != nil:
		return nil, fmt.Errorf("shard %s is switching its primary (%s); re-join when it is done", o.shard, sh.Switch.Kind)
	}
	return sh, nil
}

// current reads the map and the shard of o.shard, with o.endpoint fenced.
func (o *rejoinOptions) current(ctx context.Context, c *metarpc.Client) (metarpc.MapVersion, *shardmap.Shard, error) {
	v, err := c.GetMap(ctx)
	if err != nil {
		return v, nil, err
	}
	sh, err := o.fencedIn(v.Map)
	return v, sh, err
}

func (o *rejoinOptions) Run(ctx context.Context) error {
	var primary string
	err := o.conn.withClient(ctx, func(cctx context.Context, c *metarpc.Client) error {
		_, sh, err := o.current(cctx, c)
		if err == nil {
			primary = sh.Primary.String()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("shards rejoin: %w", err)
	}
	password := os.Getenv(o.pgPasswordEnv)
	if o.dataDir != "" {
		method, err := pgadmin.Rebuild(ctx, pgadmin.RebuildConfig{
			BinDir: o.binDir, DataDir: o.dataDir, Primary: primary, User: o.pgUser, Password: password,
			ApplicationName: o.appName, Method: o.method,
		})
		if err != nil {
			return fmt.Errorf("shards rejoin: %w", err)
		}
		fmt.Fprintf(o.stdout, "Rebuilt %s as a replica of %s (%s). Start the server now.\n", o.dataDir, primary, method)
	}
	admin := pgadmin.New(pgadmin.Config{User: o.pgUser, Password: password, SSLMode: o.pgSSLMode})
	if err := o.waitStreaming(ctx, admin, primary); err != nil {
		return fmt.Errorf("shards rejoin: %w", err)
	}
	var epoch uint64
	err = o.conn.withClient(ctx, func(cctx context.Context, c *metarpc.Client) error {
		for attempt := 0; ; attempt++ {
			v, sh, err := o.current(cctx, c)
			if err != nil {
				return err
			}
			if sh.Primary.String() != primary {
				return fmt.Errorf("the primary of %s changed to %s meanwhile; run rejoin again", o.shard, sh.Primary)
			}
			m := v.Map.Clone()
			s := m.Shard(o.shard)
			i := slices.IndexFunc(s.Fenced, func(e shardmap.Endpoint) bool { return e.String() == o.endpoint })
			s.Replicas = append(s.Replicas, s.Fenced[i])
			s.Fenced = slices.Delete(s.Fenced, i, i+1)
			m.Epoch = v.Epoch + 1
			epoch, err = c.ApplyMap(cctx, m, v.Epoch, fmt.Sprintf("rejoin %s as a replica of shard %s", o.endpoint, o.shard))
			var stale interface{ StaleEpoch() (uint64, uint64) }
			if errors.As(err, &stale) && attempt < 5 {
				continue // another change came first: look again
			}
			return err
		}
	})
	if err != nil {
		return fmt.Errorf("shards rejoin: %w", err)
	}
	fmt.Fprintf(o.stdout, "%s is a replica of shard %s again (map epoch %d).\n", o.endpoint, o.shard, epoch)
	return nil
}

// waitStreaming waits until the server is a replica streaming from
// primary.
func (o *rejoinOptions) waitStreaming(ctx context.Context, admin *pgadmin.Admin, primary string) error {
	ctx, cancel := context.WithTimeout(ctx, o.wait)
	defer cancel()
	said := false
	for {
		st, err := admin.State(ctx, o.endpoint)
		if err == nil && st.InRecovery && st.UpstreamAddr == primary {
			return nil
		}
		if !said {
			fmt.Fprintf(o.stdout, "Waiting for %s to stream from %s...\n", o.endpoint, primary)
			said = true
		}
		select {
		case <-ctx.Done():
			why := "it is not streaming from the primary"
			if err != nil {
				why = err.Error()
			} else if !st.InRecovery {
				why = "it is not in recovery (a primary, not a replica)"
			} else if st.UpstreamAddr != "" {
				why = "it streams from " + st.UpstreamAddr
			}
			return fmt.Errorf("%s did not stream from %s within --wait %s: %s", o.endpoint, primary, o.wait, why)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
