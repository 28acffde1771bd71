package scatter

import (
	"context"
	"errors"
	"testing"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/wire"
)

// The executor itself runs against real servers in package proxy's
// scatter tests; these are its pure parts.

// noBackends fails the test if Run asks for a connection.
type noBackends struct{ t *testing.T }

func (b noBackends) WaitSwitch(context.Context, string) error {
	b.t.Error("WaitSwitch called")
	return nil
}

func (b noBackends) Pool(context.Context, string, string) (*pool.Pool, error) {
	b.t.Error("Pool called")
	return nil, errors.New("no pool")
}

func (b noBackends) Acquire(context.Context, *pool.Pool) (*pool.Conn, error) {
	b.t.Error("Acquire called")
	return nil, errors.New("no pool")
}

// TestRunRefusesBadShardLists: no shard, or a shard twice, is an
// internal error (XX000) before any backend is asked for, and the output
// is Dst unchanged.
func TestRunRefusesBadShardLists(t *testing.T) {
	for _, shards := range [][]string{nil, {"s0", "s1", "s0"}} {
		dst := []byte("earlier")
		out, err := Run(context.Background(), noBackends{t}, Request{Shards: shards, SQL: "SELECT 1", Dst: dst})
		var we *wire.Error
		if !errors.As(err, &we) || we.Code != wire.SQLStateInternalError {
			t.Errorf("%v: error %v, want %s", shards, err, wire.SQLStateInternalError)
		}
		if string(out) != "earlier" {
			t.Errorf("%v: output %q, want Dst unchanged", shards, out)
		}
	}
}

// TestDropCommandComplete: a trailing CommandComplete after dst goes, and
// nothing else does.
func TestDropCommandComplete(t *testing.T) {
	dst := []byte("x")
	row := append(append([]byte{}, dst...), 'D', 0, 0, 0, 6, 0, 0)
	withTag := scatterAppendTag(append([]byte{}, row...), "SELECT 1")
	if got := dropCommandComplete(withTag, dst); string(got) != string(row) {
		t.Errorf("with a tag: %q, want %q", got, row)
	}
	if got := dropCommandComplete(row, dst); string(got) != string(row) {
		t.Errorf("without a tag: %q, want it unchanged", got)
	}
	// Only the tag itself, the very first frame after dst.
	onlyTag := scatterAppendTag([]byte("x"), "UPDATE 3")
	if got := dropCommandComplete(onlyTag, dst); string(got) != "x" {
		t.Errorf("only a tag: %q, want %q", got, "x")
	}
}

// TestTagPrefix: a tag's row count is split off only when it is a number.
func TestTagPrefix(t *testing.T) {
	for tag, want := range map[string]struct {
		prefix string
		ok     bool
	}{
		"UPDATE 7":        {"UPDATE", true},
		"INSERT 0 7":      {"INSERT 0", true},
		"CREATE TABLE":    {"CREATE TABLE", false},
		"SELECT":          {"SELECT", false},
		" 3":              {" 3", false},
		"DELETE 18446744": {"DELETE", true},
	} {
		if p, ok := scatterTagPrefix(tag); p != want.prefix || ok != want.ok {
			t.Errorf("scatterTagPrefix(%q) = %q, %v; want %q, %v", tag, p, ok, want.prefix, want.ok)
		}
	}
}

// TestCopyBinaryHeaderLen: the binary COPY header is the signature, flags
// and an extension area of the length it gives.
func TestCopyBinaryHeaderLen(t *testing.T) {
	h := []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x02ab")
	if n, ok := copyBinaryHeaderLen(h); !ok || n != 21 {
		t.Errorf("with a 2-byte extension: %d, %v; want 21, true", n, ok)
	}
	if _, ok := copyBinaryHeaderLen(h[:20]); ok {
		t.Error("a truncated extension was accepted")
	}
	if _, ok := copyBinaryHeaderLen([]byte("PGCOPX\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00")); ok {
		t.Error("a wrong signature was accepted")
	}
}

// TestServerCode: a server's SQLSTATE, wrapped or not; "" for others.
func TestServerCode(t *testing.T) {
	se := &pool.ServerError{Code: "25001"}
	if c := serverCode(se); c != "25001" {
		t.Errorf("server error: %q", c)
	}
	if c := serverCode(errors.Join(errors.New("context"), se)); c != "25001" {
		t.Errorf("wrapped server error: %q", c)
	}
	if c := serverCode(errors.New("io")); c != "" {
		t.Errorf("other error: %q", c)
	}
}
