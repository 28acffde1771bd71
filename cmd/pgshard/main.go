package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
	// exitUncertain: the command asked for a change whose outcome it
	// could not learn (it may or may not have been made).
	exitUncertain = 3
	// exitRefused: the meta cluster refused the change as unsafe (gRPC
	// FAILED_PRECONDITION, reason UNSAFE_MAP, overridden by --force; or
	// DATA_NOT_MOVED, a map that gives rows to another shard, overridden
	// by map apply --no-data-check); nothing changed.
	exitRefused = 4
)

// usageError marks errors in how a command was called.
type usageError struct{ error }

// uncertainError marks errors after which a change may or may not have
// been made.
type uncertainError struct{ error }

func (e uncertainError) Unwrap() error { return e.error }

// refusedError marks a change refused as unsafe (exitRefused).
type refusedError struct{ error }

func (e refusedError) Unwrap() error { return e.error }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes the CLI with injected streams, for tests.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCommand(stdin, stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "pgshard:", err)
		return exitCode(err)
	}
	return exitOK
}

// exitCode is the exit status of a command that failed with err.
func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	var un uncertainError
	if errors.As(err, &un) {
		return exitUncertain
	}
	var re refusedError
	if errors.As(err, &re) {
		return exitRefused
	}
	return exitError
}

func newRootCommand(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "pgshard",
		Short:         "A sharding proxy for PostgreSQL",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newProxyCommand(stdout, stderr),
		newPasswdCommand(stdin, stdout),
		newDemoCommand(stdout, stderr),
		newMapCommand(stdin, stdout),
		newShardsCommand(stdout),
		newReshardCommand(stdout),
		newFailoverCommand(stdout),
		newProxiesCommand(stdout),
		newMetaCommand(stdout),
		newTransactionsCommand(stdout),
	)
	return root
}
