package metarpc

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// authenticator checks the credentials of every request before its
// handler runs, so that a refused request changes nothing.
type authenticator struct {
	tokenHash    [sha256.Size]byte // of the bearer token, when hasToken
	hasToken     bool
	requireCert  bool // a client certificate verified against ClientCAs
	loopbackOnly bool // no credentials: loopback clients only
}

// newAuthenticator checks that opts ask for some authentication, or
// explicitly for none.
func newAuthenticator(opts *ServerOptions) (*authenticator, error) {
	a := &authenticator{requireCert: opts.RequireClientCert}
	if opts.Token != "" {
		a.hasToken = true
		a.tokenHash = sha256.Sum256([]byte(opts.Token))
	}
	if opts.RequireClientCert && (opts.TLS == nil || opts.TLS.ClientCAs == nil) {
		return nil, errors.New("RequireClientCert needs TLS with ClientCAs to verify client certificates")
	}
	switch {
	case opts.AllowUnauthenticated && (a.hasToken || a.requireCert):
		return nil, errors.New("AllowUnauthenticated contradicts Token and RequireClientCert; set one or the other")
	case opts.AllowUnauthenticated:
		a.loopbackOnly = true
	case !a.hasToken && !a.requireCert:
		return nil, errors.New("no authentication configured: set Token, RequireClientCert (with TLS.ClientCAs), or AllowUnauthenticated for a loopback-only server")
	}
	return a, nil
}

// check returns nil when ctx's request may proceed, or an Unauthenticated
// status error saying what is missing (never what the token should be).
func (a *authenticator) check(ctx context.Context) error {
	p, ok := peer.FromContext(ctx)
	if !ok || p == nil {
		return status.Error(codes.Unauthenticated, "unknown peer")
	}
	if a.loopbackOnly {
		if !isLoopback(p.Addr) {
			return status.Error(codes.Unauthenticated, "this meta server runs without authentication and only answers loopback clients")
		}
		return nil
	}
	if a.requireCert {
		info, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok || len(info.State.VerifiedChains) == 0 {
			return status.Error(codes.Unauthenticated, "a client certificate signed by a trusted CA is required")
		}
	}
	if a.hasToken {
		md, _ := metadata.FromIncomingContext(ctx)
		vals := md.Get("authorization")
		if len(vals) != 1 {
			return status.Error(codes.Unauthenticated, `a bearer token is required ("authorization: Bearer TOKEN")`)
		}
		tok, ok := bearer(vals[0])
		h := sha256.Sum256([]byte(tok))
		if !ok || subtle.ConstantTimeCompare(h[:], a.tokenHash[:]) != 1 {
			return status.Error(codes.Unauthenticated, "invalid bearer token")
		}
	}
	return nil
}

// bearer returns the token of an "authorization" value "Bearer TOKEN"
// (the scheme is case-insensitive).
func bearer(v string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// isLoopback reports whether a peer address is on this host.
func isLoopback(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	case nil:
		return false
	}
	ap, err := netip.ParseAddrPort(addr.String())
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

func (a *authenticator) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (a *authenticator) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := a.check(ss.Context()); err != nil {
		return err
	}
	return handler(srv, ss)
}

// bearerToken sends the bearer token with every request.
type bearerToken struct {
	header     string // "Bearer TOKEN"
	requireTLS bool
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": t.header}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (t bearerToken) RequireTransportSecurity() bool { return t.requireTLS }

// ServerTLSConfig builds the TLS configuration of a server from PEM files:
// its certificate and key and, unless clientCAFile is "", the CAs that
// sign client certificates (for ServerOptions.RequireClientCert).
func ServerTLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load server certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAFile != "" {
		if cfg.ClientCAs, err = loadPool(clientCAFile); err != nil {
			return nil, fmt.Errorf("load client CAs: %w", err)
		}
	}
	return cfg, nil
}

// ClientTLSConfig builds the TLS configuration of a client from PEM
// files: the CAs that sign server certificates (caFile "" means the
// system's), the client's certificate and key for mutual TLS (both "" for
// none) and the name to verify in server certificates (serverName "" means
// the host of each address dialed).
func ClientTLSConfig(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := loadPool(caFile)
		if err != nil {
			return nil, fmt.Errorf("load server CAs: %w", err)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// loadPool reads a PEM bundle of CA certificates.
func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificates", file)
	}
	return pool, nil
}
