package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// Connection defaults of the commands that talk to the meta cluster.
const (
	// defaultMetaAddr is where `pgshard demo` and a single local
	// `pgshard meta run` serve the meta API.
	defaultMetaAddr = "127.0.0.1:6440"
	// defaultMetaTimeout bounds each call: the client retries members
	// until its context ends, so every call needs a deadline.
	defaultMetaTimeout = 10 * time.Second
)

// Environment variables read when the matching flag is not given. The
// token is read from the environment rather than given as a flag default,
// so that --help never shows it.
const (
	envMeta      = "PGSHARD_META"
	envMetaToken = "PGSHARD_META_TOKEN"
)

// metaConnOptions are the flags every command that talks to the meta
// cluster has (see addFlags), and what they resolve to.
//
// Transport security: TLS is used unless plaintext is allowed, which it is
// only when --insecure asks for it, or when every address is a loopback
// address (127.0.0.0/8, ::1, localhost) and no --tls-* flag is given — the
// demo's case. Without --tls-ca the system's CAs verify the server.
type metaConnOptions struct {
	meta          string // --meta: comma-separated host:port list
	token         string
	tlsCA         string
	tlsCert       string
	tlsKey        string
	tlsServerName string
	insecure      bool
	timeout       time.Duration
	output        string

	// Set by Complete and Validate.
	addrs     []string
	plaintext bool
}

// addFlags registers the connection flags on cmd. They are added to each
// command rather than as persistent flags of a group, so that the server
// command `pgshard meta run`, under the same parent, does not inherit
// client flags that would mean something else there.
func (o *metaConnOptions) addFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&o.meta, "meta", defaultMetaAddr, "meta cluster API addresses, host:port[,host:port...] (env "+envMeta+")")
	fs.StringVar(&o.token, "token", "", "bearer token of the meta cluster (env "+envMetaToken+", which keeps it out of the process list)")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "PEM file of the CAs that sign the meta servers' certificates (default: the system's)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM client certificate, for mutual TLS (with --tls-key)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM key of --tls-cert")
	fs.StringVar(&o.tlsServerName, "tls-server-name", "", "name to verify in the servers' certificates (default: the host of each address)")
	fs.BoolVar(&o.insecure, "insecure", false, "connect without TLS, sending the token in clear (implied for loopback addresses without --tls-* flags)")
	fs.DurationVar(&o.timeout, "timeout", defaultMetaTimeout, "how long each call to the meta cluster may take, retries included")
	fs.StringVarP(&o.output, "output", "o", formatTable, "output format: table or json")
	_ = cmd.RegisterFlagCompletionFunc("output", completeOutputFormats)
	for _, f := range []string{"tls-ca", "tls-cert", "tls-key"} {
		_ = cmd.MarkFlagFilename(f, "pem", "crt", "key")
	}
	_ = cmd.RegisterFlagCompletionFunc("meta", cobra.NoFileCompletions)
	_ = cmd.RegisterFlagCompletionFunc("token", cobra.NoFileCompletions)
}

// withClient connects to the meta cluster and runs f with a context
// bounded by --timeout; the client is closed afterwards.
func (o *metaConnOptions) withClient(ctx context.Context, f func(ctx context.Context, c *metarpc.Client) error) (err error) {
	c, err := o.client()
	if err != nil {
		return err
	}
	defer closeClient(c, &err)
	cctx, cancel := o.callContext(ctx, 0)
	defer cancel()
	return f(cctx, c)
}

// runE returns a cobra RunE that completes and validates the connection
// flags, then runs run.
func (o *metaConnOptions) runE(run func(context.Context) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		o.Complete(cmd)
		if err := o.Validate(); err != nil {
			return err
		}
		return run(cmd.Context())
	}
}

// Complete fills what the flags left out from the environment.
func (o *metaConnOptions) Complete(cmd *cobra.Command) {
	if v := os.Getenv(envMeta); v != "" && !cmd.Flags().Changed("meta") {
		o.meta = v
	}
	if v := os.Getenv(envMetaToken); v != "" && !cmd.Flags().Changed("token") {
		o.token = v
	}
}

// Validate checks the flags and decides the transport.
func (o *metaConnOptions) Validate() error {
	o.addrs = o.addrs[:0]
	for _, a := range strings.Split(o.meta, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return usageError{fmt.Errorf("--meta (or %s): %q is not host:port: %w", envMeta, a, err)}
		}
		o.addrs = append(o.addrs, a)
	}
	if len(o.addrs) == 0 {
		return usageError{fmt.Errorf("--meta (or %s): no address given", envMeta)}
	}
	if o.timeout <= 0 {
		return usageError{errors.New("--timeout must be positive")}
	}
	if err := validateOutput(o.output); err != nil {
		return err
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return usageError{errors.New("--tls-cert and --tls-key go together")}
	}
	tlsFlags := o.tlsCA != "" || o.tlsCert != "" || o.tlsServerName != ""
	if o.insecure && tlsFlags {
		return usageError{errors.New("--insecure contradicts the --tls-* flags; give one or the other")}
	}
	o.plaintext = o.insecure || (!tlsFlags && allLoopback(o.addrs))
	return nil
}

// allLoopback reports whether every address is on this host.
func allLoopback(addrs []string) bool {
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			return false
		}
		if strings.EqualFold(host, "localhost") {
			continue
		}
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Unmap().IsLoopback() {
			return false
		}
	}
	return true
}

// client returns a client of the meta cluster. It connects lazily: the
// first call shows whether the addresses and credentials are right.
func (o *metaConnOptions) client() (*metarpc.Client, error) {
	opts := metarpc.ClientOptions{Token: o.token, Insecure: o.plaintext, AttemptTimeout: o.timeout}
	if len(o.addrs) > 1 {
		// Leave time for another member when the first does not answer.
		opts.AttemptTimeout = max(o.timeout/2, time.Second)
	}
	if !o.plaintext {
		cfg, err := metarpc.ClientTLSConfig(o.tlsCA, o.tlsCert, o.tlsKey, o.tlsServerName)
		if err != nil {
			return nil, fmt.Errorf("TLS configuration of the meta client: %w", err)
		}
		opts.TLS = cfg
	}
	c, err := metarpc.NewClient(o.addrs, opts)
	if err != nil {
		return nil, fmt.Errorf("meta client: %w", err)
	}
	return c, nil
}

// callContext bounds one call to the meta cluster by --timeout, plus
// extra for calls that wait on purpose.
func (o *metaConnOptions) callContext(ctx context.Context, extra time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, o.timeout+extra)
}

// explainedError is an error of a call to the meta cluster rephrased for
// the person at the terminal; the original stays reachable with errors.As.
type explainedError struct {
	msg string
	err error
}

func (e *explainedError) Error() string { return e.msg }
func (e *explainedError) Unwrap() error { return e.err }

// explain rephrases an error of a call to the meta cluster: what was
// refused and why, and what to do about it. what says what the call was
// doing ("read the map"). Errors it cannot say better come back wrapped
// with what.
func (o *metaConnOptions) explain(what string, err error) error {
	if err == nil {
		return nil
	}
	var ia *metarpc.InvalidArgumentError
	var se *metarpc.StaleEpochError
	var nl *metarpc.NotLeaderError
	tried := strings.Join(o.addrs, ", ")
	switch {
	case errors.As(err, &ia):
		var b strings.Builder
		fmt.Fprintf(&b, "%s: the meta cluster refused %s:", what, fieldNoun(ia.Field))
		for _, p := range ia.Problems {
			b.WriteString("\n  - ")
			b.WriteString(p)
		}
		return &explainedError{b.String(), err}
	case errors.As(err, &se):
		return &explainedError{fmt.Sprintf("%s: stale epoch: the map is at epoch %d, but the change was based on epoch %d; "+
			"someone changed the map in between: review the current map (pgshard map show, pgshard map diff -f FILE) and run the command again",
			what, se.Current, se.Expected), err}
	case status.Code(err) == codes.Unauthenticated:
		hint := "give the right token with --token or " + envMetaToken
		if msg := status.Convert(unwrapStatus(err)).Message(); strings.Contains(msg, "certificate") {
			hint = "give a client certificate the cluster trusts with --tls-cert and --tls-key (and --tls-ca)"
		} else if strings.Contains(msg, "loopback") {
			hint = "this meta server runs without authentication and only answers on its own host"
		}
		return &explainedError{fmt.Sprintf("%s: the meta cluster refused the credentials (%s): %s",
			what, status.Convert(unwrapStatus(err)).Message(), hint), err}
	case status.Code(err) == codes.PermissionDenied:
		return &explainedError{fmt.Sprintf("%s: permission denied: %s", what, status.Convert(unwrapStatus(err)).Message()), err}
	case errors.As(err, &nl):
		return &explainedError{fmt.Sprintf("%s: no leader of the meta cluster answered within %s (tried %s): %v", what, o.timeout, tried, nl), err}
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: interrupted: %w", what, err)
	case errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.Unavailable || status.Code(err) == codes.DeadlineExceeded:
		return &explainedError{fmt.Sprintf("%s: no member of the meta cluster answered within %s (tried %s; set them with --meta or %s): %v",
			what, o.timeout, tried, envMeta, err), err}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// unwrapStatus returns the error in err's chain that carries a gRPC
// status, so that its message is the server's without the client's
// prefixes.
func unwrapStatus(err error) error {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.(error)
	}
	return err
}

// fieldNoun names a request field of the meta API as the CLI user knows it.
func fieldNoun(field string) string {
	switch field {
	case "map_yaml":
		return "the map"
	case "comment":
		return "--comment"
	case "expected_epoch":
		return "--expect-epoch"
	case "epoch":
		return "the epoch"
	case "timeout":
		return "--wait"
	case "id":
		return "the member ID"
	case "raft_address":
		return "the Raft address"
	case "api_address":
		return "--api-addr"
	case "":
		return "the request"
	}
	return field
}

// closeClient closes c; a failure to close only matters when nothing
// else failed.
func closeClient(c *metarpc.Client, err *error) {
	if cerr := c.Close(); cerr != nil && *err == nil {
		*err = fmt.Errorf("close the meta client: %w", cerr)
	}
}
