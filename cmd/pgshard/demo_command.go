package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/internal/demo"
	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/proxy"
)

// demoStopTimeout bounds stopping the demo's PostgreSQL servers.
const demoStopTimeout = time.Minute

type demoOptions struct {
	listen      string
	adminListen string
	metaListen  string // embedded meta API ("" disables it)
	logLevel    string
	stdout      io.Writer
	stderr      io.Writer
	// ready, when set, is called once the sample data is loaded and the
	// banner printed, with the proxy's bound address (tests listen on
	// port 0) and the servers.
	ready func(proxyAddr string, cl *pgcluster.Cluster)
}

func newDemoCommand(stdout, stderr io.Writer) *cobra.Command {
	o := &demoOptions{stdout: stdout, stderr: stderr}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Start a local demo cluster and the proxy on 127.0.0.1:6432",
		Long: `Start PostgreSQL servers in a temporary directory (two shards, each a
primary and a streaming replica, and an empty spare shard to move key intervals
onto), the proxy in this process (transactions over both shards with two-phase
commit), an embedded meta cluster, load a sample users table through the proxy
and print how to connect. Ctrl-C (or SIGTERM) stops everything and
removes the data. Needs the PostgreSQL server binaries (set ` + pgcluster.EnvPGBin + ` to
their directory if they are not found).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&o.listen, "listen", demo.DefaultListen, "proxy address for clients")
	cmd.Flags().StringVar(&o.adminListen, "admin-listen", demo.DefaultAdminListen, `admin HTTP address (metrics, health); "" disables it`)
	cmd.Flags().StringVar(&o.metaListen, "meta-listen", defaultMetaAddr, `API address of the embedded meta cluster (pgshard map show, meta status); "" disables it`)
	cmd.Flags().StringVar(&o.logLevel, "log-level", "warn", "proxy log level: debug, info, warn or error")
	return cmd
}

// Complete fills defaults for options left empty.
func (o *demoOptions) Complete() error {
	if o.listen == "" {
		o.listen = demo.DefaultListen
	}
	if o.logLevel == "" {
		o.logLevel = "warn"
	}
	return nil
}

// Validate checks the addresses before anything is started.
func (o *demoOptions) Validate() error {
	if _, _, err := net.SplitHostPort(o.listen); err != nil {
		return usageError{fmt.Errorf("--listen: %w", err)}
	}
	if o.adminListen != "" {
		if _, _, err := net.SplitHostPort(o.adminListen); err != nil {
			return usageError{fmt.Errorf("--admin-listen: %w", err)}
		}
	}
	return nil
}

// Run starts the servers and the proxy, loads the sample data and serves
// until ctx ends; then it stops the proxy and the servers and removes their
// data. Startup failures are cleaned up the same way.
func (o *demoOptions) Run(ctx context.Context) (err error) {
	if err := setupLogging(o.stderr, o.logLevel); err != nil {
		return err
	}
	// Fail before starting servers when an address is taken; the proxy
	// binds for real later.
	for _, addr := range []string{o.listen, o.adminListen, o.metaListen} {
		if err := probeListen(addr); err != nil {
			return listenHint(err)
		}
	}
	fmt.Fprintf(o.stderr, "Starting PostgreSQL (%s, each a primary and %s, and a spare shard)...\n",
		plural(demo.Shards, "shard", "shards"), plural(demo.Replicas, "streaming replica", "streaming replicas"))
	cl, err := demo.StartPostgres(ctx)
	if err != nil {
		if help, ok := demo.InstallHelp(err); ok {
			fmt.Fprint(o.stderr, help)
			return errors.New("PostgreSQL server binaries not found")
		}
		if ctx.Err() != nil {
			fmt.Fprintln(o.stderr, "Interrupted; nothing left running.")
			return nil
		}
		return err
	}
	defer func() {
		fmt.Fprintln(o.stderr, "Stopping PostgreSQL...")
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), demoStopTimeout)
		defer cancel()
		if serr := demo.StopPostgres(sctx, cl); serr != nil {
			err = errors.Join(err, serr)
			return
		}
		fmt.Fprintln(o.stderr, "Stopped; data removed.")
	}()

	cfg, err := demo.ProxyConfig(cl, o.listen, o.adminListen)
	if err != nil {
		return err
	}
	var em *embeddedMeta
	if o.metaListen != "" {
		dir, err := os.MkdirTemp("", "pgshard-demo-meta-")
		if err != nil {
			return fmt.Errorf("embedded meta: %w", err)
		}
		defer os.RemoveAll(dir)
		if em, err = startEmbeddedMeta(ctx, o.metaListen, dir, cfg); err != nil {
			return listenHint(err)
		}
		defer em.close()
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var followers sync.WaitGroup
	defer followers.Wait()
	var (
		prepared   chan struct{} // closed when prepare has returned
		prepareErr error
	)
	err = runProxy(runCtx, cfg, func(srv *proxy.Server) {
		// Serve starts after this returns, so the data is loaded
		// concurrently; a failure stops the proxy.
		if em != nil {
			followers.Go(func() { em.follow(runCtx, srv) })
		}
		prepared = make(chan struct{})
		addr := srv.Addr().String()
		go func() {
			defer close(prepared)
			if perr := o.prepare(runCtx, cl, addr, cfg.AdminListen); perr != nil {
				prepareErr = perr
				stop()
			}
		}()
	})
	stop()
	if prepared != nil {
		<-prepared
	}
	if err != nil {
		return listenHint(err)
	}
	if prepareErr != nil && ctx.Err() == nil {
		return prepareErr
	}
	fmt.Fprintln(o.stderr, "\nProxy stopped.")
	return nil
}

// prepare loads the sample data through the proxy at addr and prints the
// banner.
func (o *demoOptions) prepare(ctx context.Context, cl *pgcluster.Cluster, addr, adminAddr string) error {
	fmt.Fprintf(o.stderr, "Loading %d sample users (and their orders) into %s, checking them through the proxy at %s...\n",
		demo.SampleRows, plural(len(demo.DataShards(cl)), "shard", "shards"), addr)
	if err := demo.LoadSampleData(ctx, cl, addr); err != nil {
		return err
	}
	b := demo.Banner{Cluster: cl, ProxyAddr: addr, AdminAddr: adminAddr, MetaAddr: o.metaListen}
	if o.metaListen != "" && o.metaListen != defaultMetaAddr {
		b.MetaFlag = " --meta " + demo.DialAddr(o.metaListen)
	}
	if err := demo.WriteBanner(o.stdout, b); err != nil {
		return fmt.Errorf("print banner: %w", err)
	}
	if o.ready != nil {
		o.ready(addr, cl)
	}
	return nil
}

// probeListen checks that addr ("" for none) can be listened on.
func probeListen(addr string) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return ln.Close()
}

// listenHint adds which flag to change when an address is taken.
func listenHint(err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%w (another pgshard or a PgBouncer may be running; choose other addresses with --listen and --admin-listen)", err)
	}
	return err
}

// plural says n thing or n things.
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
