package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire"
)

// msgBody encodes m and returns its body (the frame after the header).
func msgBody(t testing.TB, m pgproto3.FrontendMessage) []byte {
	t.Helper()
	f, err := m.Encode(nil)
	if err != nil {
		t.Fatalf("encode %T: %v", m, err)
	}
	return f[wire.HeaderLen:]
}

// pgMsg reads a message body the way PostgreSQL's pqformat.c does
// (pq_getmsgstring, pq_getmsgint, pq_getmsgbytes, pq_getmsgend); bad
// records the first read it would have refused.
type pgMsg struct {
	b   []byte
	cur int
	bad bool
}

func (m *pgMsg) str() []byte {
	if m.bad {
		return nil
	}
	i := bytes.IndexByte(m.b[m.cur:], 0)
	if i < 0 {
		m.bad = true
		return nil
	}
	s := m.b[m.cur : m.cur+i]
	m.cur += i + 1
	return s
}

func (m *pgMsg) int(n int) uint32 {
	if m.bad || len(m.b)-m.cur < n {
		m.bad = true
		return 0
	}
	var v uint32
	switch n {
	case 1:
		v = uint32(m.b[m.cur])
	case 2:
		v = uint32(binary.BigEndian.Uint16(m.b[m.cur:]))
	case 4:
		v = binary.BigEndian.Uint32(m.b[m.cur:])
	}
	m.cur += n
	return v
}

func (m *pgMsg) bytes(n int) []byte {
	if m.bad || n < 0 || n > len(m.b)-m.cur {
		m.bad = true
		return nil
	}
	s := m.b[m.cur : m.cur+n]
	m.cur += n
	return s
}

func (m *pgMsg) end() bool { return !m.bad && m.cur == len(m.b) }

// refParse is exec_parse_message's reading of a Parse body.
func refParse(b []byte) (name, query []byte, oids []uint32, ok bool) {
	m := &pgMsg{b: b}
	name, query = m.str(), m.str()
	n := int(m.int(2))
	for range n {
		if m.bad {
			break
		}
		oids = append(oids, m.int(4))
	}
	return name, query, oids, m.end()
}

// refBind is exec_bind_message's reading of a Bind body, without its
// checks against the statement.
type refBindMsg struct {
	portal, stmt     []byte
	formats, results []int16
	params           [][]byte
}

func refBind(b []byte) (refBindMsg, bool) {
	m := &pgMsg{b: b}
	var r refBindMsg
	r.portal, r.stmt = m.str(), m.str()
	nf := int(m.int(2))
	for range nf {
		if m.bad {
			break
		}
		r.formats = append(r.formats, int16(m.int(2)))
	}
	np := int(m.int(2))
	for range np {
		if m.bad {
			break
		}
		n := int32(m.int(4))
		if n == -1 {
			r.params = append(r.params, nil)
			continue
		}
		r.params = append(r.params, m.bytes(int(n)))
	}
	nr := int(m.int(2))
	for range nr {
		if m.bad {
			break
		}
		r.results = append(r.results, int16(m.int(2)))
	}
	return r, m.end()
}

// refKindName is the reading of a Describe or Close body.
func refKindName(b []byte) (byte, []byte, bool) {
	m := &pgMsg{b: b}
	k := byte(m.int(1))
	name := m.str()
	return k, name, m.end() && (k == 'S' || k == 'P')
}

// refExecute is exec_execute_message's reading of an Execute body.
func refExecute(b []byte) ([]byte, int32, bool) {
	m := &pgMsg{b: b}
	portal := m.str()
	n := int32(m.int(4))
	return portal, n, m.end()
}

func TestDecodeParse(t *testing.T) {
	p, err := wire.DecodeParse(msgBody(t, &pgproto3.Parse{Name: "stmtcache_1", Query: "select $1::int, $2", ParameterOIDs: []uint32{23, 0}}))
	if err != nil {
		t.Fatal(err)
	}
	if string(p.Name) != "stmtcache_1" || string(p.Query) != "select $1::int, $2" || p.NumParamTypes() != 2 ||
		p.ParamType(0) != 23 || p.ParamType(1) != 0 || !slices.Equal(p.AppendParamTypes(nil), []uint32{23, 0}) {
		t.Fatalf("decoded %+v", p)
	}
	p, err = wire.DecodeParse(msgBody(t, &pgproto3.Parse{Query: "begin"}))
	if err != nil || len(p.Name) != 0 || string(p.Query) != "begin" || p.NumParamTypes() != 0 || p.AppendParamTypes(nil) != nil {
		t.Fatalf("unnamed: %+v %v", p, err)
	}
	for _, tc := range []struct{ name, body string }{
		{"empty", ""},
		{"name not terminated", "s1"},
		{"query not terminated", "s1\x00select"},
		{"no type count", "s1\x00select 1\x00"},
		{"half a type count", "s1\x00select 1\x00\x00"},
		{"types short", "s1\x00select $1\x00\x00\x01\x00\x00\x00"},
		{"bytes after the types", "s1\x00select $1\x00\x00\x01\x00\x00\x00\x17\x00"},
		{"bytes after a zero count", "\x00select 1\x00\x00\x00x"},
	} {
		if _, err := wire.DecodeParse([]byte(tc.body)); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("%s: error %v, want ErrMalformed", tc.name, err)
		}
	}
}

func TestDecodeBind(t *testing.T) {
	b, err := wire.DecodeBind(msgBody(t, &pgproto3.Bind{
		DestinationPortal: "p1", PreparedStatement: "s1",
		ParameterFormatCodes: []int16{1, 0, 1},
		Parameters:           [][]byte{{0, 0, 0, 42}, nil, {}},
		ResultFormatCodes:    []int16{1, 0},
	}))
	if err != nil {
		t.Fatal(err)
	}
	if string(b.Portal) != "p1" || string(b.Statement) != "s1" {
		t.Fatalf("names %q %q", b.Portal, b.Statement)
	}
	if b.NumParamFormats() != 3 || !slices.Equal(b.AppendParamFormats(nil), []int16{1, 0, 1}) ||
		b.ParamFormat(0) != 1 || b.ParamFormat(1) != 0 || b.ParamFormat(2) != 1 || b.ParamFormat(3) != 0 {
		t.Fatalf("parameter formats %v", b.AppendParamFormats(nil))
	}
	params := b.AppendParams(nil)
	if b.NumParams() != 3 || len(params) != 3 || !bytes.Equal(params[0], []byte{0, 0, 0, 42}) ||
		params[1] != nil || params[2] == nil || len(params[2]) != 0 {
		t.Fatalf("parameters %#v", params)
	}
	if b.NumResultFormats() != 2 || !slices.Equal(b.AppendResultFormats(nil), []int16{1, 0}) {
		t.Fatalf("result formats %v", b.AppendResultFormats(nil))
	}
	// One format code applies to every parameter.
	b, err = wire.DecodeBind(msgBody(t, &pgproto3.Bind{ParameterFormatCodes: []int16{1}, Parameters: [][]byte{{1}, {2}}}))
	if err != nil || b.ParamFormat(0) != 1 || b.ParamFormat(1) != 1 || b.NumResultFormats() != 0 {
		t.Fatalf("one format: %v", err)
	}
	// The parameter section is what another Bind sends on.
	src := msgBody(t, &pgproto3.Bind{PreparedStatement: "s", ParameterFormatCodes: []int16{0}, Parameters: [][]byte{[]byte("7"), nil}, ResultFormatCodes: []int16{1}})
	b, _ = wire.DecodeBind(src)
	if want := src[3 : len(src)-4]; !bytes.Equal(b.ParamSection(), want) {
		t.Fatalf("parameter section %x, want %x", b.ParamSection(), want)
	}

	for _, tc := range []struct{ name, body string }{
		{"empty", ""},
		{"portal not terminated", "p"},
		{"statement not terminated", "\x00s"},
		{"no format count", "\x00\x00"},
		{"formats short", "\x00\x00\x00\x02\x00\x01"},
		{"no parameter count", "\x00\x00\x00\x00"},
		{"length short", "\x00\x00\x00\x00\x00\x01\x00\x00"},
		{"value short", "\x00\x00\x00\x00\x00\x01\x00\x00\x00\x05abc"},
		{"length -2", "\x00\x00\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x00"},
		{"length 2^31-1", "\x00\x00\x00\x00\x00\x01\x7f\xff\xff\xff\x00\x00"},
		{"no result format count", "\x00\x00\x00\x00\x00\x00"},
		{"result formats short", "\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01"},
		{"bytes after the result formats", "\x00\x00\x00\x00\x00\x00\x00\x00x"},
	} {
		if _, err := wire.DecodeBind([]byte(tc.body)); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("%s: error %v, want ErrMalformed", tc.name, err)
		}
	}
}

func TestBindClone(t *testing.T) {
	src := msgBody(t, &pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "st",
		ParameterFormatCodes: []int16{1, 0}, Parameters: [][]byte{{9, 9}, []byte("x")}, ResultFormatCodes: []int16{1}})
	b, err := wire.DecodeBind(src)
	if err != nil {
		t.Fatal(err)
	}
	c := b.Clone()
	section := bytes.Clone(b.ParamSection())
	for i := range src {
		src[i] = 0xee // the frame's buffer is reused
	}
	params := c.AppendParams(nil)
	if string(c.Portal) != "p" || string(c.Statement) != "st" || !bytes.Equal(c.ParamSection(), section) ||
		!slices.Equal(c.AppendParamFormats(nil), []int16{1, 0}) || c.ParamFormat(0) != 1 ||
		len(params) != 2 || !bytes.Equal(params[0], []byte{9, 9}) || string(params[1]) != "x" ||
		!slices.Equal(c.AppendResultFormats(nil), []int16{1}) {
		t.Fatalf("clone %+v", c)
	}
}

func TestDecodeDescribeClose(t *testing.T) {
	d, err := wire.DecodeDescribe(msgBody(t, &pgproto3.Describe{ObjectType: 'S', Name: "stmtcache_1"}))
	if err != nil || d.Kind != 'S' || string(d.Name) != "stmtcache_1" {
		t.Fatalf("describe %+v %v", d, err)
	}
	c, err := wire.DecodeClose(msgBody(t, &pgproto3.Close{ObjectType: 'P'}))
	if err != nil || c.Kind != 'P' || len(c.Name) != 0 {
		t.Fatalf("close %+v %v", c, err)
	}
	for _, tc := range []struct{ name, body string }{
		{"empty", ""},
		{"kind only", "S"},
		{"bad kind", "X\x00"},
		{"name not terminated", "Pabc"},
		{"bytes after the name", "Sa\x00b"},
	} {
		if _, err := wire.DecodeDescribe([]byte(tc.body)); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("Describe %s: error %v", tc.name, err)
		}
		if _, err := wire.DecodeClose([]byte(tc.body)); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("Close %s: error %v", tc.name, err)
		}
	}
}

func TestDecodeExecute(t *testing.T) {
	e, err := wire.DecodeExecute(msgBody(t, &pgproto3.Execute{Portal: "c1", MaxRows: 50}))
	if err != nil || string(e.Portal) != "c1" || e.MaxRows != 50 {
		t.Fatalf("execute %+v %v", e, err)
	}
	e, err = wire.DecodeExecute([]byte("\x00\xff\xff\xff\xff"))
	if err != nil || len(e.Portal) != 0 || e.MaxRows != -1 {
		t.Fatalf("execute %+v %v", e, err)
	}
	for _, tc := range []struct{ name, body string }{
		{"empty", ""},
		{"portal not terminated", "c1"},
		{"limit short", "\x00\x00\x00\x01"},
		{"bytes after the limit", "\x00\x00\x00\x00\x01\x00"},
	} {
		if _, err := wire.DecodeExecute([]byte(tc.body)); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("%s: error %v", tc.name, err)
		}
	}
}

// TestDecodeMessageError: errors name the message and the problem.
func TestDecodeMessageError(t *testing.T) {
	_, err := wire.DecodeBind([]byte("\x00"))
	var me *wire.MessageError
	if !errors.As(err, &me) || me.Message != "Bind" || err.Error() != "invalid Bind message format: statement name not terminated" {
		t.Fatalf("error %v", err)
	}
}

// TestDecodeNoAllocs: decoding, and reading the decoded fields into
// buffers the caller provides, allocate nothing.
func TestDecodeNoAllocs(t *testing.T) {
	parse := msgBody(t, &pgproto3.Parse{Name: "s1", Query: "select $1, $2", ParameterOIDs: []uint32{23, 25}})
	bind := msgBody(t, &pgproto3.Bind{PreparedStatement: "s1", ParameterFormatCodes: []int16{1, 0},
		Parameters: [][]byte{{0, 0, 0, 1}, []byte("a")}, ResultFormatCodes: []int16{1}})
	desc := msgBody(t, &pgproto3.Describe{ObjectType: 'S', Name: "s1"})
	exec := msgBody(t, &pgproto3.Execute{})
	cls := msgBody(t, &pgproto3.Close{ObjectType: 'S', Name: "s1"})
	oids := make([]uint32, 0, 8)
	formats := make([]int16, 0, 8)
	params := make([][]byte, 0, 8)
	n := testing.AllocsPerRun(100, func() {
		p, err1 := wire.DecodeParse(parse)
		oids = p.AppendParamTypes(oids[:0])
		b, err2 := wire.DecodeBind(bind)
		formats = b.AppendParamFormats(formats[:0])
		params = b.AppendParams(params[:0])
		formats = b.AppendResultFormats(formats[:0])
		_, err3 := wire.DecodeDescribe(desc)
		_, err4 := wire.DecodeExecute(exec)
		_, err5 := wire.DecodeClose(cls)
		if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per run", n)
	}
}

func BenchmarkDecodeParse(b *testing.B) {
	msg := msgBody(b, &pgproto3.Parse{Name: "stmtcache_3f2a", Query: "select v from kv where k = $1 and t = $2", ParameterOIDs: []uint32{20, 25}})
	oids := make([]uint32, 0, 4)
	b.ReportAllocs()
	for b.Loop() {
		p, err := wire.DecodeParse(msg)
		if err != nil {
			b.Fatal(err)
		}
		oids = p.AppendParamTypes(oids[:0])
	}
}

func BenchmarkDecodeBind(b *testing.B) {
	msg := msgBody(b, &pgproto3.Bind{PreparedStatement: "stmtcache_3f2a", ParameterFormatCodes: []int16{1, 0},
		Parameters: [][]byte{{0, 0, 0, 0, 0, 0, 0, 42}, []byte("hello")}, ResultFormatCodes: []int16{1}})
	formats := make([]int16, 0, 4)
	params := make([][]byte, 0, 4)
	b.ReportAllocs()
	for b.Loop() {
		m, err := wire.DecodeBind(msg)
		if err != nil {
			b.Fatal(err)
		}
		formats = m.AppendParamFormats(formats[:0])
		params = m.AppendParams(params[:0])
	}
}

func BenchmarkDecodeExecute(b *testing.B) {
	msg := msgBody(b, &pgproto3.Execute{})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := wire.DecodeExecute(msg); err != nil {
			b.Fatal(err)
		}
	}
}
