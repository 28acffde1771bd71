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
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/proxy"
)

type proxyOptions struct {
	configPath string
	logLevel   string
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
	return cmd
}

func (o *proxyOptions) Validate() error {
	if o.configPath == "" {
		return usageError{errors.New("--config is required")}
	}
	return nil
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
	cfg, err := proxy.LoadConfig(o.configPath)
	if err != nil {
		return err
	}
	return runProxy(ctx, cfg, func(srv *proxy.Server) {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		go func() {
			defer signal.Stop(hup)
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					ncfg, err := proxy.LoadConfig(o.configPath)
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
