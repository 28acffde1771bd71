package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Options tunes one Authenticate call. The zero value is valid.
type Options struct {
	// TLSServerEndPoint is the tls-server-end-point channel binding data
	// (RFC 5929: the hash of the server certificate) of the client's TLS
	// connection. When non-empty, SCRAM-SHA-256-PLUS is offered besides
	// SCRAM-SHA-256; empty means the connection is not TLS (or channel
	// binding is not wanted) and only SCRAM-SHA-256 is offered.
	TLSServerEndPoint []byte

	// Rand is the source of SCRAM nonces and md5 salts; nil means
	// crypto/rand. Tests may set a deterministic reader.
	Rand io.Reader

	// MockSecret keys the fake salts of unknown users, so that the salt
	// of a user name is stable and looks real. nil means a random secret
	// generated once per process; set the same value on every proxy
	// behind one address so they agree on fake salts too.
	MockSecret []byte
}

func (o Options) rand() io.Reader {
	if o.Rand == nil {
		return rand.Reader
	}
	return o.Rand
}

// processMockSecret is the MockSecret used when Options leaves it nil.
var processMockSecret = sync.OnceValue(func() []byte {
	b := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		panic(fmt.Sprintf("auth: read mock secret: %v", err)) // crypto/rand never fails on supported platforms
	}
	return b
})

func (o Options) mockSecret() []byte {
	if o.MockSecret == nil {
		return processMockSecret()
	}
	return o.MockSecret
}

// Authenticate runs the server side of client authentication with method
// for user, whose stored verifiers are cred, over be. It is called after
// the StartupMessage has been received and before anything else is sent.
//
// On success it returns nil having sent the method's challenges but not
// AuthenticationOk: the caller sends AuthenticationOk, ParameterStatus,
// BackendKeyData and ReadyForQuery. On an authentication failure it
// returns an *Error (SQLSTATE 28P01, or 08P01 for a protocol violation);
// the caller should send its ErrorResponse and close the connection.
// Other errors are I/O errors or ctx's error, wrapped; the connection is
// then unusable.
//
// A zero or malformed cred makes the exchange fail exactly as a wrong
// password does (a fake SCRAM exchange), so clients cannot tell unknown
// users from known ones. With MD5, a user with only a SCRAM verifier is
// authenticated with SCRAM, as PostgreSQL does; an unknown user then also
// gets SCRAM, so where every real user has an md5 verifier the method
// offered tells them apart, exactly as in PostgreSQL with
// password_encryption = scram-sha-256.
//
// Authenticate does not set deadlines: the caller bounds the exchange with
// deadlines on the connection; ctx is checked between steps. The caller
// should also limit message sizes (pgproto3.Backend.SetMaxBodyLen, or the
// FrameConn's frame reader's limit). Authenticate leaves be's auth type at
// AuthTypeOk.
func Authenticate(ctx context.Context, be Conn, method Method, user string, cred Credential, opts Options) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	defer func() { _ = be.SetAuthType(pgproto3.AuthTypeOk) }()

	var credErr error
	if err := cred.validate(); err != nil {
		// Like PostgreSQL with an invalid stored secret: fail the way an
		// unknown user does; keep the reason for the log.
		credErr = fmt.Errorf("invalid stored credential for user: %w", err)
		cred = Credential{}
	}

	switch method {
	case Trust:
		return nil
	case MD5:
		if cred.MD5 != "" {
			return md5Exchange(ctx, be, user, cred.MD5, opts)
		}
		return scramExchange(ctx, be, user, cred.SCRAM, credErr, opts)
	case SCRAMSHA256:
		return scramExchange(ctx, be, user, cred.SCRAM, credErr, opts)
	default:
		return fmt.Errorf("auth: unsupported method %q", method)
	}
}

// md5Exchange sends AuthenticationMD5Password with a random salt and checks
// the client's PasswordMessage against verifier.
func md5Exchange(ctx context.Context, be Conn, user, verifier string, opts Options) error {
	var salt [4]byte
	if _, err := io.ReadFull(opts.rand(), salt[:]); err != nil {
		return fmt.Errorf("auth: md5: read salt: %w", err)
	}
	if err := be.SetAuthType(pgproto3.AuthTypeMD5Password); err != nil {
		return fmt.Errorf("auth: md5: %w", err)
	}
	be.Send(&pgproto3.AuthenticationMD5Password{Salt: salt})
	if err := be.Flush(); err != nil {
		return fmt.Errorf("auth: md5: send AuthenticationMD5Password: %w", err)
	}
	msg, err := receive(ctx, be, "password")
	if err != nil {
		return err
	}
	pw, ok := msg.(*pgproto3.PasswordMessage)
	if !ok {
		return protocolViolation(nil, "expected password response, got message type %d", msgType(msg))
	}
	want := md5Response(verifier, salt)
	if subtle.ConstantTimeCompare([]byte(pw.Password), []byte(want)) != 1 {
		return authFailed(user, errors.New("md5 response mismatch"))
	}
	return nil
}

// receive reads the next client message during authentication, mapping
// a Terminate or broken connection to a wrapped I/O error and any other
// undecodable message to a protocol violation. The message is only valid
// until the next receive.
func receive(ctx context.Context, be Conn, what string) (pgproto3.FrontendMessage, error) {
	msg, err := be.Receive()
	if err != nil {
		if isIOError(err) {
			return nil, fmt.Errorf("auth: receive %s response: %w", what, err)
		}
		return nil, protocolViolation(err, "invalid %s response", what)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if _, ok := msg.(*pgproto3.Terminate); ok {
		return nil, fmt.Errorf("auth: client terminated during authentication: %w", io.EOF)
	}
	return msg, nil
}

func isIOError(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.As(err, &ne)
}

// msgType returns the protocol type byte of msg, for error messages.
func msgType(msg pgproto3.FrontendMessage) byte {
	b, err := msg.Encode(nil)
	if err != nil || len(b) == 0 {
		return 0
	}
	return b[0]
}
