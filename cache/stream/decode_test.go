package stream

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/pgshard/pgshard/cache"
)

// recorder is a sink that writes down what the decoder reports.
type recorder struct{ got []string }

func (r *recorder) Invalidate(table string, rowKey []byte, lsn cache.LSN, _ time.Time) {
	r.got = append(r.got, fmt.Sprintf("key %s %s @%d", table, rowKey, lsn))
}
func (r *recorder) InvalidateTable(table string, lsn cache.LSN, _ time.Time) {
	r.got = append(r.got, fmt.Sprintf("table %s @%d", table, lsn))
}
func (r *recorder) Committed(end cache.LSN, _ time.Time) {
	r.got = append(r.got, fmt.Sprintf("commit %d", end))
}

// pgoutput protocol 1 messages, encoded as the server sends them.

func cstr(b []byte, s string) []byte { return append(append(b, s...), 0) }

type col struct {
	name  string
	inKey bool
}

func relationMsg(id uint32, schema, name string, identity byte, cols ...col) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'R'}, id)
	b = cstr(cstr(b, schema), name)
	b = append(b, identity)
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for _, c := range cols {
		flag := byte(0)
		if c.inKey {
			flag = 1
		}
		b = cstr(append(b, flag), c.name)
		b = binary.BigEndian.AppendUint32(b, 25)
		b = binary.BigEndian.AppendUint32(b, 0xffffffff)
	}
	return b
}

// tuple encodes values: "NULL" as null, "TOAST" as unchanged toast, else text.
func tuple(vals ...string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(vals)))
	for _, v := range vals {
		switch v {
		case "NULL":
			b = append(b, 'n')
		case "TOAST":
			b = append(b, 'u')
		default:
			b = append(b, 't')
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			b = append(b, v...)
		}
	}
	return b
}

func begin(final uint64) []byte {
	b := binary.BigEndian.AppendUint64([]byte{'B'}, final)
	b = binary.BigEndian.AppendUint64(b, 0)
	return binary.BigEndian.AppendUint32(b, 7)
}

func commit(lsn, end uint64) []byte {
	b := binary.BigEndian.AppendUint64([]byte{'C', 0}, lsn)
	b = binary.BigEndian.AppendUint64(b, end)
	return binary.BigEndian.AppendUint64(b, 0)
}

func insert(rel uint32, tup []byte) []byte {
	return append(append(binary.BigEndian.AppendUint32([]byte{'I'}, rel), 'N'), tup...)
}

func update(rel uint32, oldKind byte, old, tup []byte) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'U'}, rel)
	if old != nil {
		b = append(append(b, oldKind), old...)
	}
	return append(append(b, 'N'), tup...)
}

func del(rel uint32, oldKind byte, old []byte) []byte {
	return append(append(binary.BigEndian.AppendUint32([]byte{'D'}, rel), oldKind), old...)
}

func truncate(rels ...uint32) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'T'}, uint32(len(rels)))
	b = append(b, 0)
	for _, r := range rels {
		b = binary.BigEndian.AppendUint32(b, r)
	}
	return b
}

func TestDecoder(t *testing.T) {
	const (
		users  = 1 // key id is the primary key
		notes  = 2 // key id is not in the identity (nid is)
		other  = 3 // not cacheable
		nokey  = 4 // cacheable, but lacks its key column
		fullid = 5 // REPLICA IDENTITY FULL
	)
	tables := map[string]string{"public.users": "id", "public.notes": "id", "public.nokey": "id", "public.full": "id"}
	rec := &recorder{}
	d := newDecoder(tables, rec, slog.New(slog.NewTextHandler(io.Discard, nil)))
	steps := []struct {
		msg  []byte
		want []string
	}{
		{relationMsg(users, "public", "users", 'd', col{"id", true}, col{"name", false}), nil},
		{relationMsg(notes, "public", "notes", 'd', col{"nid", true}, col{"id", false}), nil},
		{relationMsg(other, "public", "other", 'd', col{"id", true}), nil},
		{relationMsg(nokey, "public", "nokey", 'd', col{"x", true}), nil},
		{relationMsg(fullid, "public", "full", 'f', col{"nid", false}, col{"id", false}), nil},
		{begin(100), nil},
		{insert(users, tuple("42", "a")), []string{"key public.users 42 @100"}},
		{insert(other, tuple("42")), nil},
		{insert(users, tuple("NULL", "a")), nil}, // a NULL key: no point read finds it
		// key unchanged (in the identity, no old tuple): the key only
		{update(users, 0, nil, tuple("42", "b")), []string{"key public.users 42 @100"}},
		// key changed: new and old
		{update(users, 'K', tuple("41", "NULL"), tuple("42", "b")), []string{"key public.users 42 @100", "key public.users 41 @100"}},
		// key unchanged but TOASTed and not sent: the table
		{update(users, 0, nil, tuple("TOAST", "b")), []string{"table public.users @100"}},
		{del(users, 'K', tuple("42", "NULL")), []string{"key public.users 42 @100"}},
		// key not in the identity: an UPDATE might change it, a DELETE does not send it
		{update(notes, 0, nil, tuple("1", "7")), []string{"key public.notes 7 @100", "table public.notes @100"}},
		{del(notes, 'K', tuple("1", "NULL")), []string{"table public.notes @100"}},
		// REPLICA IDENTITY FULL: the old row is sent whole
		{update(fullid, 'O', tuple("1", "7"), tuple("1", "8")), []string{"key public.full 8 @100", "key public.full 7 @100"}},
		{del(fullid, 'O', tuple("1", "8")), []string{"key public.full 8 @100"}},
		{insert(nokey, tuple("1")), []string{"table public.nokey @100"}},
		{truncate(users, other, notes), []string{"table public.users @100", "table public.notes @100"}},
		{commit(100, 130), []string{"commit 130"}},
	}
	for i, s := range steps {
		rec.got = nil
		end, err := d.apply(s.msg)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if !slices.Equal(rec.got, s.want) {
			t.Errorf("step %d (%c): got %q, want %q", i, s.msg[0], rec.got, s.want)
		}
		if s.msg[0] == 'C' && end != 130 {
			t.Errorf("commit returned end %v, want 130", end)
		}
	}
	if _, err := d.apply([]byte{'I', 0}); err == nil {
		t.Error("a truncated message decoded without error")
	}
}
