package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire"
)

const (
	v30 = 3 << 16
	v32 = 3<<16 | 2
)

// rawPacket prefixes body with its int32 length (itself included).
func rawPacket(body []byte) []byte {
	out := binary.BigEndian.AppendUint32(nil, uint32(len(body)+4))
	return append(out, body...)
}

// startupBody is a version code followed by NUL-terminated strings and
// the final terminator.
func startupBody(version uint32, strs ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, version)
	for _, s := range strs {
		b = append(b, s...)
		b = append(b, 0)
	}
	return append(b, 0)
}

func startupPacket(version uint32, strs ...string) []byte {
	return rawPacket(startupBody(version, strs...))
}

// lengthOnly is a 4-byte length word with nothing after it.
func lengthOnly(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

func cancelPacket(t testing.TB, pid uint32, key []byte) []byte {
	t.Helper()
	out, err := (&pgproto3.CancelRequest{ProcessID: pid, SecretKey: key}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// paddedStartup returns a valid startup packet of exactly n bytes.
func paddedStartup(n int) []byte {
	base := len(startupPacket(v30, "user", "bob", "application_name", ""))
	return startupPacket(v30, "user", "bob", "application_name", strings.Repeat("x", n-base))
}

type startupCase struct {
	name     string
	packet   []byte
	kind     wire.StartupKind
	params   map[string]string // KindStartup
	neg      []string          // non-nil: Negotiate expected with these options
	cancel   *pgproto3.CancelRequest
	code     string // SQLSTATE of the expected *wire.Error
	noReads  bool   // only the length word may be read
	errMatch error  // expected non-*wire.Error error (errors.Is)
}

func startupCases(t testing.TB) []startupCase {
	key32 := bytes.Repeat([]byte{0xab}, 32)
	return []startupCase{
		{name: "3.0 user database options",
			packet: startupPacket(v30, "user", "bob", "database", "app", "options", "-c search_path=s"),
			kind:   wire.KindStartup,
			params: map[string]string{"user": "bob", "database": "app", "options": "-c search_path=s"}},
		{name: "3.0 user only", packet: startupPacket(v30, "user", "bob"),
			kind: wire.KindStartup, params: map[string]string{"user": "bob"}},
		{name: "duplicate user: last wins like PostgreSQL",
			packet: startupPacket(v30, "user", "bob", "user", "alice"),
			kind:   wire.KindStartup, params: map[string]string{"user": "alice"}},
		{name: "NUL in startup value splits it into more parameters",
			// What a client means as application_name "x\x00user\x00admin" is,
			// on the wire, indistinguishable from more pairs; PostgreSQL
			// reads it the same way, so the decoder must agree with it.
			packet: startupPacket(v30, "user", "bob", "application_name", "x", "user", "admin"),
			kind:   wire.KindStartup, params: map[string]string{"user": "admin", "application_name": "x"}},
		{name: "non-ASCII bytes kept verbatim",
			packet: startupPacket(v30, "user", "b\xc3\xb6b", "application_name", "\xff\x01"),
			kind:   wire.KindStartup, params: map[string]string{"user": "b\xc3\xb6b", "application_name": "\xff\x01"}},
		{name: "length exactly 10000", packet: paddedStartup(10000), kind: wire.KindStartup},

		{name: "SSLRequest", packet: rawPacket(binary.BigEndian.AppendUint32(nil, 80877103)), kind: wire.KindSSLRequest},
		{name: "GSSENCRequest", packet: rawPacket(binary.BigEndian.AppendUint32(nil, 80877104)), kind: wire.KindGSSENCRequest},
		{name: "SSLRequest with trailing bytes", packet: rawPacket(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 80877103), 0)), code: wire.SQLStateProtocolViolation},
		{name: "GSSENCRequest with trailing bytes", packet: rawPacket(append(binary.BigEndian.AppendUint32(nil, 80877104), 1)), code: wire.SQLStateProtocolViolation},
		{name: "CancelRequest 3.0 key", packet: cancelPacket(t, 4242, []byte{1, 2, 3, 4}),
			kind: wire.KindCancelRequest, cancel: &pgproto3.CancelRequest{ProcessID: 4242, SecretKey: []byte{1, 2, 3, 4}}},
		{name: "CancelRequest 3.2 long key", packet: cancelPacket(t, 7, key32),
			kind: wire.KindCancelRequest, cancel: &pgproto3.CancelRequest{ProcessID: 7, SecretKey: key32}},
		{name: "CancelRequest without key", packet: rawPacket(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 80877102), 1)),
			code: wire.SQLStateProtocolViolation},
		{name: "CancelRequest key over 256 bytes",
			packet: rawPacket(append(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 80877102), 1), make([]byte, 257)...)),
			code:   wire.SQLStateProtocolViolation},

		{name: "protocol 3.2 negotiates", packet: startupPacket(v32, "user", "bob"),
			kind: wire.KindStartup, params: map[string]string{"user": "bob"}, neg: []string{}},
		{name: "protocol 3.99 negotiates", packet: startupPacket(3<<16|99, "user", "bob"),
			kind: wire.KindStartup, params: map[string]string{"user": "bob"}, neg: []string{}},
		{name: "_pq_ options negotiated and removed",
			packet: startupPacket(v30, "user", "bob", "_pq_.z", "1", "database", "d", "_pq_.a", "on"),
			kind:   wire.KindStartup, params: map[string]string{"user": "bob", "database": "d"}, neg: []string{"_pq_.a", "_pq_.z"}},
		{name: "protocol 3.2 with _pq_ option",
			packet: startupPacket(v32, "_pq_.x", "1", "user", "bob"),
			kind:   wire.KindStartup, params: map[string]string{"user": "bob"}, neg: []string{"_pq_.x"}},
		{name: "protocol 2.0", packet: startupPacket(2<<16, "user", "bob"), code: wire.SQLStateFeatureNotSupported},
		{name: "protocol 4.0", packet: startupPacket(4<<16, "user", "bob"), code: wire.SQLStateFeatureNotSupported},
		{name: "protocol 0.0", packet: startupPacket(0, "user", "bob"), code: wire.SQLStateFeatureNotSupported},
		{name: "unknown 1234.x request code", packet: rawPacket(binary.BigEndian.AppendUint32(nil, 1234<<16|5677)), code: wire.SQLStateFeatureNotSupported},

		{name: "length 0", packet: lengthOnly(0), code: wire.SQLStateProtocolViolation, noReads: true},
		{name: "length 4", packet: lengthOnly(4), code: wire.SQLStateProtocolViolation, noReads: true},
		{name: "length 7", packet: lengthOnly(7), code: wire.SQLStateProtocolViolation, noReads: true},
		{name: "length 10001", packet: lengthOnly(10001), code: wire.SQLStateProtocolViolation, noReads: true},
		{name: "length 2^31-1", packet: lengthOnly(1<<31 - 1), code: wire.SQLStateProtocolViolation, noReads: true},
		{name: "length 2^31", packet: lengthOnly(1 << 31), code: wire.SQLStateProtocolViolation, noReads: true},
		{name: "length 2^32-1", packet: lengthOnly(1<<32 - 1), code: wire.SQLStateProtocolViolation, noReads: true},
		{name: "length 10001 with content", packet: paddedStartup(10001), code: wire.SQLStateProtocolViolation},

		{name: "version only, no terminator", packet: rawPacket(binary.BigEndian.AppendUint32(nil, v30)), code: wire.SQLStateProtocolViolation},
		{name: "missing final terminator",
			packet: rawPacket(startupBody(v30, "user", "bob")[:len(startupBody(v30, "user", "bob"))-1]),
			code:   wire.SQLStateProtocolViolation},
		{name: "last byte not NUL", packet: rawPacket(append(startupBody(v30, "user", "bob"), 'x')), code: wire.SQLStateProtocolViolation},
		{name: "odd number of strings", packet: startupPacket(v30, "user", "bob", "database"), code: wire.SQLStateProtocolViolation},
		{name: "NUL in the middle: empty key", packet: rawPacket(append(startupBody(v30, "user", "bob"), "x\x00\x00"...)),
			code: wire.SQLStateProtocolViolation},
		{name: "extra terminators", packet: rawPacket(append(startupBody(v30, "user", "bob"), 0)), code: wire.SQLStateProtocolViolation},
		{name: "no user", packet: startupPacket(v30, "database", "d"), code: wire.SQLStateInvalidAuthorization},
		{name: "user only in _pq_ option", packet: startupPacket(v30, "_pq_.user", "bob"), code: wire.SQLStateInvalidAuthorization},

		{name: "truncated body", packet: startupPacket(v30, "user", "bob")[:12], errMatch: io.ErrUnexpectedEOF},
		{name: "truncated length", packet: []byte{0, 0}, errMatch: io.ErrUnexpectedEOF},
		{name: "empty stream", packet: nil, errMatch: io.EOF},
	}
}

func TestReadStartup(t *testing.T) {
	for _, tc := range startupCases(t) {
		for _, w := range readerWrappers {
			t.Run(tc.name+"/"+w.name, func(t *testing.T) {
				var src io.Reader = bytes.NewReader(tc.packet)
				if tc.noReads {
					if w.name == "data+EOF" {
						t.Skip("iotest.DataErrReader reads ahead by itself")
					}
					src = &strictReader{t: t, data: tc.packet}
				}
				var ms0, ms1 runtime.MemStats
				runtime.ReadMemStats(&ms0)
				got, err := wire.ReadStartup(w.wrap(src))
				runtime.ReadMemStats(&ms1)
				if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 64<<10 {
					t.Errorf("ReadStartup allocated %d bytes", alloc)
				}
				checkStartup(t, tc, got, err)
			})
		}
	}
}

// TestDecodeStartup runs the same rows through DecodeStartup on the body.
func TestDecodeStartup(t *testing.T) {
	for _, tc := range startupCases(t) {
		if len(tc.packet) < 4 || tc.errMatch != nil || tc.noReads || len(tc.packet) > 10000 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			got, err := wire.DecodeStartup(tc.packet[4:])
			checkStartup(t, tc, got, err)
		})
	}
	for _, short := range [][]byte{nil, {}, {0, 3, 0}} {
		_, err := wire.DecodeStartup(short)
		wantWireError(t, err, wire.SQLStateProtocolViolation)
	}
}

func wantWireError(t *testing.T, err error, code string) {
	t.Helper()
	var we *wire.Error
	if !errors.As(err, &we) {
		t.Fatalf("error = %v (%T), want *wire.Error %s", err, err, code)
	}
	if we.Code != code || we.Severity != "FATAL" {
		t.Fatalf("error = %q %s %q, want FATAL %s", we.Severity, we.Code, we.Message, code)
	}
}

func checkStartup(t *testing.T, tc startupCase, got wire.Startup, err error) {
	t.Helper()
	switch {
	case tc.code != "":
		wantWireError(t, err, tc.code)
		return
	case tc.errMatch != nil:
		if !errors.Is(err, tc.errMatch) {
			t.Fatalf("error = %v, want %v", err, tc.errMatch)
		}
		var we *wire.Error
		if errors.As(err, &we) {
			t.Fatalf("I/O error reported as a protocol error: %v", err)
		}
		return
	case err != nil:
		t.Fatalf("unexpected error: %v", err)
	}
	if got.Kind != tc.kind {
		t.Fatalf("Kind = %v, want %v", got.Kind, tc.kind)
	}
	switch got.Kind {
	case wire.KindStartup:
		if got.Message == nil || got.Cancel != nil {
			t.Fatalf("Message = %v, Cancel = %v", got.Message, got.Cancel)
		}
		if got.Message.ProtocolVersion != wire.ProtocolVersion30 {
			t.Errorf("ProtocolVersion = %#x, want 3.0 (the version the proxy speaks)", got.Message.ProtocolVersion)
		}
		if tc.params != nil && !maps.Equal(got.Message.Parameters, tc.params) {
			t.Errorf("Parameters = %q, want %q", got.Message.Parameters, tc.params)
		}
		switch {
		case tc.neg == nil && got.Negotiate != nil:
			t.Errorf("Negotiate = %+v, want nil", got.Negotiate)
		case tc.neg != nil && got.Negotiate == nil:
			t.Errorf("Negotiate = nil, want options %q", tc.neg)
		case tc.neg != nil:
			if !slices.Equal(got.Negotiate.UnrecognizedOptions, tc.neg) && len(tc.neg)+len(got.Negotiate.UnrecognizedOptions) > 0 {
				t.Errorf("Negotiate options = %q, want %q", got.Negotiate.UnrecognizedOptions, tc.neg)
			}
			if got.Negotiate.NewestMinorProtocol != 0 {
				t.Errorf("NewestMinorProtocol = %d, want 0", got.Negotiate.NewestMinorProtocol)
			}
		}
	case wire.KindCancelRequest:
		if got.Cancel == nil || got.Message != nil {
			t.Fatalf("Cancel = %v, Message = %v", got.Cancel, got.Message)
		}
		if got.Cancel.ProcessID != tc.cancel.ProcessID || !bytes.Equal(got.Cancel.SecretKey, tc.cancel.SecretKey) {
			t.Errorf("Cancel = %+v, want %+v", got.Cancel, tc.cancel)
		}
	default:
		if got.Message != nil || got.Cancel != nil || got.Negotiate != nil {
			t.Errorf("%v carries a message: %+v", got.Kind, got)
		}
	}
}

// TestReadStartupLeavesRest checks ReadStartup reads exactly one packet:
// what follows (an SSL ClientHello, the StartupMessage after an
// SSLRequest is refused) stays in the reader.
func TestReadStartupLeavesRest(t *testing.T) {
	ssl, _ := (&pgproto3.SSLRequest{}).Encode(nil)
	start := startupPacket(v30, "user", "bob")
	r := bytes.NewReader(append(append([]byte{}, ssl...), start...))
	if s, err := wire.ReadStartup(r); err != nil || s.Kind != wire.KindSSLRequest {
		t.Fatalf("first packet: %+v, %v", s, err)
	}
	if r.Len() != len(start) {
		t.Fatalf("%d bytes left after SSLRequest, want %d", r.Len(), len(start))
	}
	if s, err := wire.ReadStartup(r); err != nil || s.Kind != wire.KindStartup {
		t.Fatalf("second packet: %+v, %v", s, err)
	}
}

func TestStartupRoundTrip(t *testing.T) {
	paramSets := []map[string]string{
		{"user": "bob"},
		{"user": "bob", "database": "app", "options": "-c a=b", "application_name": "psql"},
		{"user": strings.Repeat("u", 63), "client_encoding": "UTF8", "DateStyle": "ISO, MDY", "x.y": "z"},
	}
	for _, params := range paramSets {
		for _, version := range []uint32{pgproto3.ProtocolVersion30, pgproto3.ProtocolVersion32} {
			raw, err := (&pgproto3.StartupMessage{ProtocolVersion: version, Parameters: params}).Encode(nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := wire.ReadStartup(bytes.NewReader(raw))
			if err != nil {
				t.Fatalf("%v: %v", params, err)
			}
			if got.Kind != wire.KindStartup || !maps.Equal(got.Message.Parameters, params) {
				t.Fatalf("round trip of %v (version %#x) = %+v", params, version, got.Message)
			}
			if (version != pgproto3.ProtocolVersion30) != (got.Negotiate != nil) {
				t.Fatalf("version %#x: Negotiate = %+v", version, got.Negotiate)
			}
			// And back: what we decoded encodes to a packet that decodes equal.
			again, err := got.Message.Encode(nil)
			if err != nil {
				t.Fatal(err)
			}
			got2, err := wire.ReadStartup(iotest.OneByteReader(bytes.NewReader(again)))
			if err != nil || !maps.Equal(got2.Message.Parameters, params) {
				t.Fatalf("re-encoded packet: %+v, %v", got2.Message, err)
			}
		}
	}
	for _, msg := range []interface {
		Encode([]byte) ([]byte, error)
	}{&pgproto3.SSLRequest{}, &pgproto3.GSSEncRequest{}, &pgproto3.CancelRequest{ProcessID: 1, SecretKey: []byte("abcd")}} {
		raw, err := msg.Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := wire.ReadStartup(bytes.NewReader(raw)); err != nil {
			t.Errorf("%T: %v", msg, err)
		}
	}
}

// TestStartupLayoutLikePostgres holds rows where PostgreSQL (backend_startup.c,
// ProcessStartupPacket) accepts or rejects the layout differently from us.
func TestStartupLayoutLikePostgres(t *testing.T) {
	tests := []struct {
		name   string
		packet []byte
		params map[string]string
		code   string
	}{
		{name: "empty value", packet: startupPacket(v30, "user", "bob", "application_name", ""),
			params: map[string]string{"user": "bob", "application_name": ""}},
		{name: "empty options value", packet: startupPacket(v30, "options", "", "user", "bob"),
			params: map[string]string{"user": "bob", "options": ""}},
		{name: "empty _pq_ option value", packet: startupPacket(v32, "_pq_.x", "", "user", "bob"),
			params: map[string]string{"user": "bob"}},
		{name: "empty user", packet: startupPacket(v30, "user", ""), code: wire.SQLStateInvalidAuthorization},
		{name: "empty value then empty name", packet: rawPacket(append(startupBody(v30, "user", "bob", "a", ""), "x\x00\x00"...)),
			code: wire.SQLStateProtocolViolation},
		{name: "no parameters at all", packet: startupPacket(v30), code: wire.SQLStateInvalidAuthorization},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := wire.ReadStartup(bytes.NewReader(tt.packet))
			if tt.code != "" {
				wantWireError(t, err, tt.code)
				return
			}
			if err != nil {
				t.Fatalf("PostgreSQL accepts this packet; ReadStartup: %v", err)
			}
			if !maps.Equal(got.Message.Parameters, tt.params) {
				t.Fatalf("Parameters = %q, want %q", got.Message.Parameters, tt.params)
			}
		})
	}
}
