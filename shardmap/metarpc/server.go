package metarpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/pgshard/pgshard/shardmap/metapb"
)

// DefaultMaxMessageSize is the largest message a server or client sends or
// receives unless told otherwise: room for a shard map of many thousands
// of intervals.
const DefaultMaxMessageSize = 16 << 20

// Connection limits of the server.
const (
	// handshakeTimeout bounds the TLS handshake and HTTP/2 preface of a
	// new connection, so a client that connects and says nothing (or
	// garbage) does not hold it.
	handshakeTimeout = 10 * time.Second
	// keepaliveMinTime is the most often a client may ping; clients ping
	// every keepaliveTime.
	keepaliveMinTime = 10 * time.Second
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 10 * time.Second
	// maxStreams is the most concurrent RPCs on one connection.
	maxStreams = 1000
	// maxHeaderBytes bounds the request metadata.
	maxHeaderBytes = 1 << 20
)

// ServerOptions configure a Server. Some authentication must be chosen:
// Token, RequireClientCert (with TLS), both, or explicitly none with
// AllowUnauthenticated. A request without the required credentials is
// refused with codes.Unauthenticated before anything is done.
type ServerOptions struct {
	// Token, when not empty, is the bearer token every request must carry
	// ("authorization: Bearer TOKEN"), compared in constant time. Without
	// TLS it crosses the network in clear: use TLS beyond loopback.
	Token string
	// TLS, when not nil, makes the server speak TLS with this
	// configuration, which needs a certificate (see ServerTLSConfig). Its
	// ClientCAs verify client certificates.
	TLS *tls.Config
	// RequireClientCert refuses every request over a connection whose
	// client did not present a certificate verified against TLS.ClientCAs
	// (mutual TLS). The server then asks for client certificates
	// (tls.VerifyClientCertIfGiven unless TLS.ClientAuth asks for more),
	// so that a missing one is answered with codes.Unauthenticated.
	RequireClientCert bool
	// AllowUnauthenticated serves without credentials, to loopback
	// clients only (others get codes.Unauthenticated): for the
	// single-process demo. It cannot be combined with Token or
	// RequireClientCert.
	AllowUnauthenticated bool
	// MaxMessageSize bounds the messages received and sent; 0 means
	// DefaultMaxMessageSize.
	MaxMessageSize int
	// Logger receives handler panics and errors the Store returned that
	// have no better status than codes.Unknown; nil means none.
	Logger *slog.Logger

	// Switchover, when not nil, runs the Switchover RPC: it makes the
	// replica to (host:port; "" lets it choose) the primary of shard and
	// returns the epoch of the map that has the new primary, and that
	// primary. The server calls it on the leader only (a follower
	// redirects the client, having done nothing), with a context that
	// ends at the request's timeout, when the client goes away or when
	// the server shuts down; what an unfinished switchover does then is
	// the hook's business (its state is in the map). Its errors choose
	// the status code by wrapping ErrNotFound, ErrFailedPrecondition,
	// ErrAborted or ErrInvalidArgument (about "to"); context errors give
	// DeadlineExceeded or Canceled, anything else Unknown. Without it the
	// RPC answers codes.Unimplemented.
	Switchover func(ctx context.Context, shard, to string) (epoch uint64, newPrimary string, err error)
	// Health, when not nil, is this member's view of the endpoints of the
	// shard map (internal/controlplane adapts a health monitor's
	// snapshot), which ListShards reports per endpoint and ApplyMap
	// checks a new map against. It must not block. Without it the
	// endpoints' state is "unknown".
	Health func() []EndpointHealth
	// Transactions, when not nil, is the last report of this member's
	// two-phase recovery (ListTransactions), and false while it has made
	// none. The server calls it on the leader only. It must not block.
	// Without it ListTransactions answers codes.Unimplemented.
	Transactions func() (TransactionsReport, bool)
	// CountRows, when not nil, counts rows on the PostgreSQL server at
	// server (host:port): for each query, the rows of its table that
	// match its condition, summed over the server's databases that have
	// the table (0 when none has it). ApplyMap calls it on the leader
	// for every key interval a new map gives to another shard, on the
	// old owner's primary, and refuses the map while any has rows
	// (*DataNotMovedError) or the count fails, unless the request sets
	// no_data_check. Without it, ApplyMap does not check data.
	CountRows func(ctx context.Context, server string, queries []RowQuery) ([]int64, error)
	// Reshard, when not nil, serves the resharding RPCs (AddShard,
	// SplitInterval, StartMove, ReshardAction, ListMoves); without it
	// they answer UNIMPLEMENTED. Writes reach it on the leader only.
	Reshard Resharder
}

// Server serves the MetaService over a Store. Create it with NewServer,
// run it with Serve and end it with Shutdown or Stop.
type Server struct {
	grpc *grpc.Server
	svc  *service
	stop context.CancelFunc // ends WatchMap and WaitApplied calls
}

// NewServer returns a server of store with opts. It fails when opts do not
// choose an authentication.
func NewServer(store Store, opts ServerOptions) (*Server, error) {
	if store == nil {
		return nil, errors.New("metarpc: NewServer: nil Store")
	}
	auth, err := newAuthenticator(&opts)
	if err != nil {
		return nil, fmt.Errorf("metarpc: NewServer: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	size := opts.MaxMessageSize
	if size <= 0 {
		size = DefaultMaxMessageSize
	}
	gopts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(size),
		grpc.MaxSendMsgSize(size),
		grpc.MaxHeaderListSize(maxHeaderBytes),
		grpc.MaxConcurrentStreams(maxStreams),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
		// Recovery is outermost so that a panic anywhere is answered
		// with codes.Internal instead of ending the process.
		grpc.ChainUnaryInterceptor(recoverUnary(log), auth.unary),
		grpc.ChainStreamInterceptor(recoverStream(log), auth.stream),
	}
	if opts.TLS != nil {
		cfg := opts.TLS.Clone()
		if opts.RequireClientCert && cfg.ClientAuth < tls.VerifyClientCertIfGiven {
			cfg.ClientAuth = tls.VerifyClientCertIfGiven
		}
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	stopping, stop := context.WithCancel(context.Background())
	s := &Server{
		grpc: grpc.NewServer(gopts...),
		svc: &service{
			store: store, stopping: stopping, log: log, maxMsg: size,
			switchover: opts.Switchover, health: opts.Health, countRows: opts.CountRows,
			transactions: opts.Transactions, reshard: opts.Reshard,
		},
		stop: stop,
	}
	metapb.RegisterMetaServiceServer(s.grpc, s.svc)
	return s, nil
}

// Serve accepts connections on lis until Shutdown or Stop, and then
// returns nil. It may be called for several listeners.
func (s *Server) Serve(lis net.Listener) error {
	if err := s.grpc.Serve(lis); err != nil {
		return fmt.Errorf("metarpc: serve %s: %w", lis.Addr(), err)
	}
	return nil
}

// Shutdown stops accepting connections, ends WatchMap and WaitApplied
// calls with codes.Unavailable (clients move on to another member), and
// waits for the other calls to finish. When ctx ends first it closes
// every connection and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
		return fmt.Errorf("metarpc: shutdown: %w", ctx.Err())
	}
}

// Stop closes every listener and connection at once, failing the calls
// in progress.
func (s *Server) Stop() {
	s.stop()
	s.grpc.Stop()
}

func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error("metarpc: panic in handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				resp, err = nil, status.Error(codes.Internal, "internal error in "+info.FullMethod)
			}
		}()
		return handler(ctx, req)
	}
}

func recoverStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error("metarpc: panic in handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, "internal error in "+info.FullMethod)
			}
		}()
		return handler(srv, ss)
	}
}
