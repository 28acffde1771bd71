package wire_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"unsafe"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire"
)

// The extended-protocol fuzz targets check each decoder against a
// reading of the body as PostgreSQL's postgres.c does it (see pgMsg):
// the decoder never panics, accepts exactly what PostgreSQL reads, gives
// the same fields, re-encodes to the same bytes, and returns slices of
// the body that cannot grow into it. Seed corpora (messages in the
// layouts pgx and libpq send, and edge cases) are in
// testdata/fuzz/<target>.

// within checks s is a slice of body with no room to grow into it.
func within(t *testing.T, what string, s, body []byte) {
	t.Helper()
	if len(s) == 0 {
		return
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(body)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	if p < start || p+uintptr(len(s)) > start+uintptr(len(body)) {
		t.Fatalf("%s is not a slice of the body", what)
	}
	if cap(s) != len(s) {
		t.Fatalf("%s has capacity %d over its length %d: appending would overwrite the body", what, cap(s), len(s))
	}
}

func checkDecodeErr(t *testing.T, err error, accepted bool) {
	t.Helper()
	switch {
	case accepted && err != nil:
		t.Fatalf("refused a message PostgreSQL reads: %v", err)
	case !accepted && err == nil:
		t.Fatal("accepted a message PostgreSQL refuses")
	case err != nil:
		var me *wire.MessageError
		if !errors.As(err, &me) || !errors.Is(err, wire.ErrMalformed) || me.Message == "" || me.Problem == "" {
			t.Fatalf("error %#v", err)
		}
	}
}

func reencode(t *testing.T, m pgproto3.FrontendMessage, want []byte) {
	t.Helper()
	f, err := m.Encode(nil)
	if err != nil {
		t.Fatalf("re-encode %+v: %v", m, err)
	}
	if !bytes.Equal(f[wire.HeaderLen:], want) {
		t.Fatalf("re-encoded %x, want %x", f[wire.HeaderLen:], want)
	}
}

func FuzzDecodeParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := wire.DecodeParse(data)
		name, query, oids, ok := refParse(data)
		checkDecodeErr(t, err, ok)
		if err != nil {
			return
		}
		got := p.AppendParamTypes(nil)
		if !bytes.Equal(p.Name, name) || !bytes.Equal(p.Query, query) || !slices.Equal(got, oids) || p.NumParamTypes() != len(oids) {
			t.Fatalf("decoded %q %q %v, PostgreSQL reads %q %q %v", p.Name, p.Query, got, name, query, oids)
		}
		for i, o := range oids {
			if p.ParamType(i) != o {
				t.Fatalf("ParamType(%d) = %d, want %d", i, p.ParamType(i), o)
			}
		}
		within(t, "Name", p.Name, data)
		within(t, "Query", p.Query, data)
		reencode(t, &pgproto3.Parse{Name: string(p.Name), Query: string(p.Query), ParameterOIDs: got}, data)
	})
}

func FuzzDecodeBind(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := wire.DecodeBind(data)
		ref, ok := refBind(data)
		checkDecodeErr(t, err, ok)
		if err != nil {
			return
		}
		formats, params, results := b.AppendParamFormats(nil), b.AppendParams(nil), b.AppendResultFormats(nil)
		if !bytes.Equal(b.Portal, ref.portal) || !bytes.Equal(b.Statement, ref.stmt) ||
			!slices.Equal(formats, ref.formats) || !slices.Equal(results, ref.results) ||
			b.NumParamFormats() != len(ref.formats) || b.NumResultFormats() != len(ref.results) ||
			b.NumParams() != len(ref.params) || len(params) != len(ref.params) {
			t.Fatalf("decoded %+v, PostgreSQL reads %+v", b, ref)
		}
		for i, p := range params {
			if (p == nil) != (ref.params[i] == nil) || !bytes.Equal(p, ref.params[i]) {
				t.Fatalf("parameter %d: %q, PostgreSQL reads %q", i, p, ref.params[i])
			}
			within(t, "a parameter", p, data)
			want := int16(0)
			switch {
			case len(formats) == 1:
				want = formats[0]
			case i < len(formats):
				want = formats[i]
			}
			if b.ParamFormat(i) != want {
				t.Fatalf("ParamFormat(%d) = %d, want %d", i, b.ParamFormat(i), want)
			}
		}
		within(t, "Portal", b.Portal, data)
		within(t, "Statement", b.Statement, data)
		within(t, "ParamSection", b.ParamSection(), data)
		n := len(b.Portal) + len(b.Statement) + 2
		if !bytes.Equal(b.ParamSection(), data[n:len(data)-2-2*len(results)]) {
			t.Fatalf("parameter section %x of %x", b.ParamSection(), data)
		}
		c := b.Clone()
		if !bytes.Equal(c.Portal, b.Portal) || !bytes.Equal(c.Statement, b.Statement) ||
			!bytes.Equal(c.ParamSection(), b.ParamSection()) || c.NumParams() != b.NumParams() ||
			!slices.Equal(c.AppendResultFormats(nil), results) || !slices.Equal(c.AppendParamFormats(nil), formats) {
			t.Fatalf("clone %+v of %+v", c, b)
		}
		reencode(t, &pgproto3.Bind{DestinationPortal: string(b.Portal), PreparedStatement: string(b.Statement),
			ParameterFormatCodes: formats, Parameters: params, ResultFormatCodes: results}, data)
	})
}

func fuzzKindName(f *testing.F, decode func([]byte) (byte, []byte, error), encode func(byte, string) pgproto3.FrontendMessage) {
	f.Fuzz(func(t *testing.T, data []byte) {
		k, name, err := decode(data)
		rk, rname, ok := refKindName(data)
		checkDecodeErr(t, err, ok)
		if err != nil {
			return
		}
		if k != rk || !bytes.Equal(name, rname) {
			t.Fatalf("decoded %q %q, PostgreSQL reads %q %q", k, name, rk, rname)
		}
		within(t, "Name", name, data)
		reencode(t, encode(k, string(name)), data)
	})
}

func FuzzDecodeDescribe(f *testing.F) {
	fuzzKindName(f, func(b []byte) (byte, []byte, error) {
		d, err := wire.DecodeDescribe(b)
		return d.Kind, d.Name, err
	}, func(k byte, n string) pgproto3.FrontendMessage { return &pgproto3.Describe{ObjectType: k, Name: n} })
}

func FuzzDecodeClose(f *testing.F) {
	fuzzKindName(f, func(b []byte) (byte, []byte, error) {
		c, err := wire.DecodeClose(b)
		return c.Kind, c.Name, err
	}, func(k byte, n string) pgproto3.FrontendMessage { return &pgproto3.Close{ObjectType: k, Name: n} })
}

func FuzzDecodeExecute(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := wire.DecodeExecute(data)
		portal, maxRows, ok := refExecute(data)
		checkDecodeErr(t, err, ok)
		if err != nil {
			return
		}
		if !bytes.Equal(e.Portal, portal) || e.MaxRows != maxRows {
			t.Fatalf("decoded %+v, PostgreSQL reads %q %d", e, portal, maxRows)
		}
		within(t, "Portal", e.Portal, data)
		reencode(t, &pgproto3.Execute{Portal: string(e.Portal), MaxRows: uint32(e.MaxRows)}, data)
	})
}
