package auth

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"
)

// SASL mechanism names as PostgreSQL spells them.
const (
	mechSCRAM     = "SCRAM-SHA-256"
	mechSCRAMPlus = "SCRAM-SHA-256-PLUS"

	// rawNonceLen is the server nonce length before base64, as in
	// PostgreSQL (SCRAM_RAW_NONCE_LEN).
	rawNonceLen = 18
)

// scramExchange runs SASL SCRAM-SHA-256 (RFC 5802, RFC 7677) in
// PostgreSQL's variant: the SCRAM user name is ignored (clients send
// "n="), authorization identities are refused, and channel binding is
// tls-server-end-point only. A nil verifier runs a fake exchange that
// fails like a wrong password; credErr then says why, for logs.
//
// The SCRAM message handling is github.com/xdg-go/scram's server
// conversation; this function adds PostgreSQL's SASL framing and the
// checks PostgreSQL makes around it (mechanism vs. gs2 flag, authzid).
func scramExchange(ctx context.Context, be Conn, user string, v *SCRAMVerifier, credErr error, opts Options) error {
	fake := v == nil
	var stored scram.StoredCredentials
	if fake {
		var err error
		if stored, err = mockCredentials(user, opts); err != nil {
			return fmt.Errorf("auth: SCRAM: %w", err)
		}
		if credErr == nil {
			credErr = errors.New("no SCRAM verifier for user (unknown user, no password, or md5 only)")
		}
	} else {
		stored = scram.StoredCredentials{
			KeyFactors: scram.KeyFactors{Salt: string(v.Salt), Iters: v.Iterations},
			StoredKey:  v.StoredKey,
			ServerKey:  v.ServerKey,
		}
	}

	mechs := []string{mechSCRAM}
	if len(opts.TLSServerEndPoint) > 0 {
		mechs = []string{mechSCRAMPlus, mechSCRAM}
	}
	if err := be.SetAuthType(pgproto3.AuthTypeSASL); err != nil {
		return fmt.Errorf("auth: SCRAM: %w", err)
	}
	be.Send(&pgproto3.AuthenticationSASL{AuthMechanisms: mechs})
	if err := be.Flush(); err != nil {
		return fmt.Errorf("auth: SCRAM: send AuthenticationSASL: %w", err)
	}

	msg, err := receive(ctx, be, "SASL")
	if err != nil {
		return err
	}
	initial, ok := msg.(*pgproto3.SASLInitialResponse)
	if !ok {
		return protocolViolation(nil, "expected SASL response, got message type %d", msgType(msg))
	}
	if !slices.Contains(mechs, initial.AuthMechanism) {
		return protocolViolation(nil, "client selected an invalid SASL authentication mechanism")
	}
	if len(initial.Data) == 0 {
		return protocolViolation(nil, "malformed SCRAM message")
	}
	// RFC 5802 section 6 via PostgreSQL: the PLUS mechanism must come with
	// channel binding ("p=..."), the plain one must not.
	if plus, p := initial.AuthMechanism == mechSCRAMPlus, bytes.HasPrefix(initial.Data, []byte("p=")); plus != p {
		if plus {
			return protocolViolation(nil, "malformed SCRAM message: the client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data")
		}
		return protocolViolation(nil, "malformed SCRAM message: the client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data")
	}

	var nonceErr error
	srv, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return stored, nil })
	if err != nil {
		return fmt.Errorf("auth: SCRAM: %w", err)
	}
	srv.WithNonceGenerator(func() string {
		raw := make([]byte, rawNonceLen)
		if _, err := io.ReadFull(opts.rand(), raw); err != nil {
			nonceErr = err
		}
		return base64.StdEncoding.EncodeToString(raw)
	})
	var conv *scram.ServerConversation
	if len(opts.TLSServerEndPoint) > 0 {
		conv = srv.NewConversationWithChannelBinding(scram.ChannelBinding{
			Type: scram.ChannelBindingTLSServerEndpoint,
			Data: opts.TLSServerEndPoint,
		})
	} else {
		conv = srv.NewConversation()
	}

	serverFirst, err := conv.Step(string(initial.Data))
	if nonceErr != nil {
		return fmt.Errorf("auth: SCRAM: read nonce: %w", nonceErr)
	}
	if err != nil {
		switch serverFirst {
		case scram.ErrServerDoesSupportChannelBinding, scram.ErrChannelBindingNotSupported, scram.ErrUnsupportedChannelBindingType:
			return protocolViolation(err, "SCRAM channel binding negotiation error")
		}
		return protocolViolation(err, "malformed SCRAM message")
	}
	if conv.AuthzID() != "" {
		return protocolViolation(nil, "client uses authorization identity, but it is not supported")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if err := be.SetAuthType(pgproto3.AuthTypeSASLContinue); err != nil {
		return fmt.Errorf("auth: SCRAM: %w", err)
	}
	be.Send(&pgproto3.AuthenticationSASLContinue{Data: []byte(serverFirst)})
	if err := be.Flush(); err != nil {
		return fmt.Errorf("auth: SCRAM: send AuthenticationSASLContinue: %w", err)
	}

	msg, err = receive(ctx, be, "SASL")
	if err != nil {
		return err
	}
	final, ok := msg.(*pgproto3.SASLResponse)
	if !ok {
		return protocolViolation(nil, "expected SASL response, got message type %d", msgType(msg))
	}
	serverFinal, err := conv.Step(string(final.Data))
	if err != nil {
		switch serverFinal {
		case scram.ErrInvalidProof:
			if fake {
				return authFailed(user, credErr)
			}
			return authFailed(user, fmt.Errorf("SCRAM: %w", err))
		case scram.ErrChannelBindingsDontMatch:
			return protocolViolation(err, "SCRAM channel binding check failed")
		}
		return protocolViolation(err, "malformed SCRAM message")
	}
	if fake || !conv.Valid() {
		// Unreachable unless someone guessed a random StoredKey; fail anyway.
		return authFailed(user, credErr)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if err := be.SetAuthType(pgproto3.AuthTypeSASLFinal); err != nil {
		return fmt.Errorf("auth: SCRAM: %w", err)
	}
	be.Send(&pgproto3.AuthenticationSASLFinal{Data: []byte(serverFinal)})
	if err := be.Flush(); err != nil {
		return fmt.Errorf("auth: SCRAM: send AuthenticationSASLFinal: %w", err)
	}
	return nil
}

// mockCredentials returns stored credentials for a user without a SCRAM
// verifier: a salt that is a keyed hash of the user name (stable across
// connections, like a real one, and unlinkable without the secret),
// DefaultIterations, and random keys no proof will match.
func mockCredentials(user string, opts Options) (scram.StoredCredentials, error) {
	mac := hmac.New(sha256.New, opts.mockSecret())
	mac.Write([]byte("pgshard mock SCRAM salt\x00"))
	mac.Write([]byte(user))
	salt := mac.Sum(nil)[:SaltLen]

	keys := make([]byte, 2*scramKeyLen)
	if _, err := io.ReadFull(opts.rand(), keys); err != nil {
		return scram.StoredCredentials{}, fmt.Errorf("read mock keys: %w", err)
	}
	return scram.StoredCredentials{
		KeyFactors: scram.KeyFactors{Salt: string(salt), Iters: DefaultIterations},
		StoredKey:  keys[:scramKeyLen],
		ServerKey:  keys[scramKeyLen:],
	}, nil
}
