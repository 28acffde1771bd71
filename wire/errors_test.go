package wire_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire"
)

func TestAppendErrorResponse(t *testing.T) {
	tests := []struct {
		name string
		err  *wire.Error
		want pgproto3.ErrorResponse
	}{
		{name: "default severity",
			err:  wire.Errorf(wire.SQLStateQueryCanceled, "canceling statement due to %s", "user request"),
			want: pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "57014", Message: "canceling statement due to user request"}},
		{name: "fatal",
			err:  wire.Fatalf(wire.SQLStateTooManyConnections, "too many clients"),
			want: pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "53300", Message: "too many clients"}},
		{name: "detail and hint, cause not sent",
			err: &wire.Error{Code: wire.SQLStateConnectionFailure, Message: "m", Detail: "d\nline 2", Hint: "h",
				Err: errors.New("secret internal cause")},
			want: pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "08006", Message: "m", Detail: "d\nline 2", Hint: "h"}},
		{name: "non-ASCII message",
			err:  wire.Errorf(wire.SQLStateInvalidParameterValue, "valeur invalide « %s »", "x"),
			want: pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "22023", Message: "valeur invalide « x »"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("prefix")
			out := wire.AppendErrorResponse(append([]byte(nil), prefix...), tt.err)
			if string(out[:len(prefix)]) != string(prefix) {
				t.Fatal("AppendErrorResponse clobbered dst")
			}
			frame := out[len(prefix):]
			if frame[0] != 'E' {
				t.Fatalf("type %q, want 'E'", frame[0])
			}
			if n := binary.BigEndian.Uint32(frame[1:]); int(n) != len(frame)-1 {
				t.Fatalf("length word %d, frame is %d bytes", n, len(frame))
			}
			var got pgproto3.ErrorResponse
			if err := got.Decode(frame[wire.HeaderLen:]); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tt.want) {
				t.Fatalf("decoded\n %+v\nwant\n %+v", got, tt.want)
			}
			if strings.Contains(string(frame), "secret") {
				t.Fatal("the underlying cause leaked into the frame")
			}
			// The relay reads fields back with ErrorCode/ErrorField.
			if c := wire.ErrorCode(frame); c != tt.want.Code {
				t.Errorf("ErrorCode = %q, want %q", c, tt.want.Code)
			}
			for f, v := range map[byte]string{'S': tt.want.Severity, 'V': tt.want.SeverityUnlocalized, 'M': tt.want.Message, 'D': tt.want.Detail, 'H': tt.want.Hint, 'P': ""} {
				if got := wire.ErrorField(frame, f); got != v {
					t.Errorf("ErrorField(%q) = %q, want %q", f, got, v)
				}
			}
		})
	}
}

func TestErrorFieldServerFrames(t *testing.T) {
	full := pgproto3.ErrorResponse{Severity: "FEHLER", SeverityUnlocalized: "ERROR", Code: "42P01", Message: "relation \"t\" does not exist",
		Position: 15, File: "parse_relation.c", Line: 1449, Routine: "parserOpenTable"}
	frame, err := full.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	notice, err := (&pgproto3.NoticeResponse{Severity: "NOTICE", Code: "00000", Message: "hello"}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		frame []byte
		f     byte
		want  string
	}{
		{frame, 'C', "42P01"},
		{frame, 'S', "FEHLER"},
		{frame, 'V', "ERROR"},
		{frame, 'P', "15"},
		{frame, 'L', "1449"},
		{frame, 'R', "parserOpenTable"},
		{frame, 'W', ""},
		{frame, 0, ""},
		{notice, 'C', "00000"},
		{notice, 'M', "hello"},
		{notice, 'D', ""},
	}
	for _, tt := range tests {
		if got := wire.ErrorField(tt.frame, tt.f); got != tt.want {
			t.Errorf("ErrorField(%q frame, %q) = %q, want %q", tt.frame[0], tt.f, got, tt.want)
		}
	}
}

// TestErrorFieldTruncated checks ErrorField on every prefix of a valid
// frame and on garbage: it never panics and returns either "" or a prefix
// of the real value.
func TestErrorFieldTruncated(t *testing.T) {
	frame := wire.AppendErrorResponse(nil, &wire.Error{Severity: "FATAL", Code: "08P01", Message: "bad", Detail: "dd", Hint: "hh"})
	want := map[byte]string{'S': "FATAL", 'V': "FATAL", 'C': "08P01", 'M': "bad", 'D': "dd", 'H': "hh"}
	for i := 0; i <= len(frame); i++ {
		for f, v := range want {
			got := wire.ErrorField(frame[:i], f)
			if !strings.HasPrefix(v, got) {
				t.Errorf("ErrorField(frame[:%d], %q) = %q, not a prefix of %q", i, f, got, v)
			}
		}
	}
	garbage := [][]byte{nil, {}, {'E'}, {'E', 0, 0, 0, 4}, {'E', 0, 0, 0, 5, 'C'}, {'E', 0, 0, 0, 9, 'C', '0', '8'},
		{'E', 0xff, 0xff, 0xff, 0xff, 'C', 0, 0}, []byte("E\x00\x00\x00\x00\x00C08P01\x00")}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		g := make([]byte, rng.IntN(40))
		for i := range g {
			g[i] = "CMSV\x00x"[rng.IntN(6)]
		}
		garbage = append(garbage, g)
	}
	for _, g := range garbage {
		for _, f := range []byte{'C', 'M', 0} {
			_ = wire.ErrorField(g, f) // must not panic
		}
		_ = wire.ErrorCode(g)
	}
	// An empty first field (terminator) hides what follows.
	if got := wire.ErrorCode([]byte("E\x00\x00\x00\x00\x00C08P01\x00")); got != "" {
		t.Errorf("ErrorCode after terminator = %q, want \"\"", got)
	}
}

func TestErrorValue(t *testing.T) {
	cause := io.ErrUnexpectedEOF
	e := &wire.Error{Code: wire.SQLStateConnectionFailure, Message: "lost server", Err: cause}
	if got, want := e.Error(), "lost server (08006): unexpected EOF"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got, want := wire.Errorf("42000", "x %d", 1).Error(), "x 1 (42000)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(e, io.ErrUnexpectedEOF) {
		t.Error("errors.Is does not see the cause")
	}
	if wire.Errorf("42000", "x").Severity != "" || wire.Fatalf("42000", "x").Severity != "FATAL" {
		t.Error("Errorf/Fatalf severities")
	}

	wrapped := fmt.Errorf("context: %w", e)
	if got := wire.AsError(wrapped); got != e {
		t.Errorf("AsError(wrapped) = %v, want the same *Error", got)
	}
	plain := errors.New("dial tcp 10.0.0.1:5432: connection refused")
	got := wire.AsError(plain)
	if got.Code != wire.SQLStateInternalError || strings.Contains(got.Message, "10.0.0.1") || got.Err != plain {
		t.Errorf("AsError(plain) = %+v", got)
	}
	frame := wire.AppendErrorResponse(nil, got)
	if strings.Contains(string(frame), "10.0.0.1") {
		t.Error("internal error text leaked into the ErrorResponse")
	}
}

func TestAppendSmallMessages(t *testing.T) {
	rfq := wire.AppendReadyForQuery(nil, 'T')
	var z pgproto3.ReadyForQuery
	if rfq[0] != 'Z' || binary.BigEndian.Uint32(rfq[1:]) != 5 || z.Decode(rfq[wire.HeaderLen:]) != nil || z.TxStatus != 'T' {
		t.Errorf("ReadyForQuery frame %q", rfq)
	}
	ps := wire.AppendParameterStatus([]byte("x"), "TimeZone", "UTC")
	var p pgproto3.ParameterStatus
	if ps[1] != 'S' || int(binary.BigEndian.Uint32(ps[2:])) != len(ps)-2 || p.Decode(ps[1+wire.HeaderLen:]) != nil ||
		p.Name != "TimeZone" || p.Value != "UTC" {
		t.Errorf("ParameterStatus frame %q", ps)
	}
}
