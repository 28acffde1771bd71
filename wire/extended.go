package wire

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Decoders of the extended-protocol client messages the proxy looks
// into: Parse, Bind, Describe, Execute and Close. Each takes a message
// body (the frame after its 5-byte header) and checks it as PostgreSQL's
// postgres.c does (every count and length within the body, strings
// NUL-terminated, no bytes left over, Describe and Close of 'S' or 'P'),
// so a message they accept is one a server would read. Semantic checks
// (a format count that matches neither 0, 1 nor the parameter count, a
// parameter count that differs from the statement's) are the server's.
//
// They do not copy or allocate: the byte slices of the results alias
// the body and are valid only while it is. Errors wrap ErrMalformed; the
// caller answers them with SQLSTATE 08P01 (SQLStateProtocolViolation).

// MessageError reports a malformed extended-protocol message.
type MessageError struct {
	Message string // "Bind", "Parse", ...
	Problem string // what is wrong, for logs
}

// Error implements error.
func (e *MessageError) Error() string {
	return fmt.Sprintf("invalid %s message format: %s", e.Message, e.Problem)
}

// Unwrap makes errors.Is(err, ErrMalformed) true.
func (e *MessageError) Unwrap() error { return ErrMalformed }

func malformedMsg(msg, problem string) error { return &MessageError{Message: msg, Problem: problem} }

// cstr splits the NUL-terminated string at the start of b from the rest.
func cstr(b []byte) (s, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i:i], b[i+1:], true
}

// u16 splits a big-endian uint16 count from the start of b.
func u16(b []byte) (int, []byte, bool) {
	if len(b) < 2 {
		return 0, nil, false
	}
	return int(binary.BigEndian.Uint16(b)), b[2:], true
}

// Parse is a decoded Parse message.
type Parse struct {
	Name  []byte // prepared statement name; empty for the unnamed one
	Query []byte // query text
	types []byte // parameter type OIDs, 4 bytes each
}

// DecodeParse decodes a Parse message body.
func DecodeParse(body []byte) (Parse, error) {
	var p Parse
	var ok bool
	if p.Name, body, ok = cstr(body); !ok {
		return Parse{}, malformedMsg("Parse", "statement name not terminated")
	}
	if p.Query, body, ok = cstr(body); !ok {
		return Parse{}, malformedMsg("Parse", "query not terminated")
	}
	n, body, ok := u16(body)
	if !ok {
		return Parse{}, malformedMsg("Parse", "no parameter type count")
	}
	if len(body) != 4*n {
		return Parse{}, malformedMsg("Parse", "parameter types do not match their count")
	}
	p.types = body
	return p, nil
}

// NumParamTypes returns the number of parameter types the message gives.
func (p *Parse) NumParamTypes() int { return len(p.types) / 4 }

// ParamType returns the type OID of parameter i (0: unspecified).
func (p *Parse) ParamType(i int) uint32 { return binary.BigEndian.Uint32(p.types[4*i:]) }

// AppendParamTypes appends the parameter type OIDs to dst.
func (p *Parse) AppendParamTypes(dst []uint32) []uint32 {
	for b := p.types; len(b) >= 4; b = b[4:] {
		dst = append(dst, binary.BigEndian.Uint32(b))
	}
	return dst
}

// Bind is a decoded Bind message.
type Bind struct {
	Portal    []byte // destination portal; empty for the unnamed one
	Statement []byte // source prepared statement; empty for the unnamed one
	// params is the message from the parameter format count through the
	// last parameter value: the format codes (2 bytes each) from offset
	// 2, the values (int32 length, -1 for NULL, and bytes) from offset
	// 4+2*numFormats.
	params     []byte
	numFormats int
	numParams  int
	results    []byte // result format codes, 2 bytes each
}

func (b *Bind) formats() []byte { return b.params[2 : 2+2*b.numFormats] }
func (b *Bind) values() []byte  { return b.params[4+2*b.numFormats:] }

// DecodeBind decodes a Bind message body.
func DecodeBind(body []byte) (Bind, error) {
	var b Bind
	var ok bool
	if b.Portal, body, ok = cstr(body); !ok {
		return Bind{}, malformedMsg("Bind", "portal name not terminated")
	}
	if b.Statement, body, ok = cstr(body); !ok {
		return Bind{}, malformedMsg("Bind", "statement name not terminated")
	}
	start := body
	if b.numFormats, body, ok = u16(body); !ok || len(body) < 2*b.numFormats {
		return Bind{}, malformedMsg("Bind", "parameter format codes truncated")
	}
	if b.numParams, body, ok = u16(body[2*b.numFormats:]); !ok {
		return Bind{}, malformedMsg("Bind", "no parameter count")
	}
	for range b.numParams {
		if len(body) < 4 {
			return Bind{}, malformedMsg("Bind", "parameter length truncated")
		}
		n := int32(binary.BigEndian.Uint32(body))
		body = body[4:]
		if n == -1 {
			continue
		}
		if n < 0 || int(n) > len(body) {
			return Bind{}, malformedMsg("Bind", "parameter value length out of range")
		}
		body = body[n:]
	}
	used := len(start) - len(body)
	b.params = start[:used:used]
	nr, body, ok := u16(body)
	if !ok {
		return Bind{}, malformedMsg("Bind", "no result format count")
	}
	if len(body) != 2*nr {
		return Bind{}, malformedMsg("Bind", "result format codes do not match their count")
	}
	b.results = body
	return b, nil
}

// NumParamFormats returns the number of parameter format codes (0: all
// text; 1: one for all; else one per parameter).
func (b *Bind) NumParamFormats() int { return b.numFormats }

// AppendParamFormats appends the parameter format codes as sent to dst.
func (b *Bind) AppendParamFormats(dst []int16) []int16 {
	return appendInt16s(dst, b.formats())
}

// ParamFormat returns the format code that applies to parameter i: 0
// (text) when the message gives none (or none for i), the one code when
// it gives one.
func (b *Bind) ParamFormat(i int) int16 {
	switch nf := b.numFormats; {
	case nf == 1:
		return int16(binary.BigEndian.Uint16(b.params[2:]))
	case i >= 0 && i < nf:
		return int16(binary.BigEndian.Uint16(b.params[2+2*i:]))
	}
	return 0
}

// NumParams returns the number of parameter values.
func (b *Bind) NumParams() int { return b.numParams }

// AppendParams appends the parameter values to dst: nil for NULL, else
// a slice of the body (empty, not nil, for an empty value).
func (b *Bind) AppendParams(dst [][]byte) [][]byte {
	v := b.values()
	for range b.numParams {
		n := int32(binary.BigEndian.Uint32(v))
		v = v[4:]
		if n < 0 {
			dst = append(dst, nil)
			continue
		}
		dst = append(dst, v[:n:n])
		v = v[n:]
	}
	return dst
}

// ParamSection returns the message from the parameter format count
// through the last parameter value, to be sent on in another Bind.
func (b *Bind) ParamSection() []byte { return b.params }

// Clone returns a copy of b that does not alias the message body (one
// allocation), for a Bind kept after its frame's buffer is reused.
func (b *Bind) Clone() Bind {
	buf := make([]byte, 0, len(b.Portal)+len(b.Statement)+len(b.params)+len(b.results))
	buf = append(buf, b.Portal...)
	buf = append(buf, b.Statement...)
	buf = append(buf, b.params...)
	buf = append(buf, b.results...)
	c := *b
	next := func(n int) []byte {
		s := buf[:n:n]
		buf = buf[n:]
		return s
	}
	c.Portal = next(len(b.Portal))
	c.Statement = next(len(b.Statement))
	c.params = next(len(b.params))
	c.results = next(len(b.results))
	return c
}

// NumResultFormats returns the number of result format codes.
func (b *Bind) NumResultFormats() int { return len(b.results) / 2 }

// AppendResultFormats appends the result format codes to dst.
func (b *Bind) AppendResultFormats(dst []int16) []int16 {
	return appendInt16s(dst, b.results)
}

func appendInt16s(dst []int16, b []byte) []int16 {
	for ; len(b) >= 2; b = b[2:] {
		dst = append(dst, int16(binary.BigEndian.Uint16(b)))
	}
	return dst
}

// Describe is a decoded Describe message.
type Describe struct {
	Kind byte   // 'S' (prepared statement) or 'P' (portal)
	Name []byte // empty for the unnamed statement or portal
}

// DecodeDescribe decodes a Describe message body.
func DecodeDescribe(body []byte) (Describe, error) {
	k, n, err := kindName("Describe", body)
	return Describe{Kind: k, Name: n}, err
}

// Close is a decoded Close message.
type Close struct {
	Kind byte   // 'S' (prepared statement) or 'P' (portal)
	Name []byte // empty for the unnamed statement or portal
}

// DecodeClose decodes a Close message body.
func DecodeClose(body []byte) (Close, error) {
	k, n, err := kindName("Close", body)
	return Close{Kind: k, Name: n}, err
}

func kindName(msg string, body []byte) (byte, []byte, error) {
	if len(body) == 0 || (body[0] != 'S' && body[0] != 'P') {
		return 0, nil, malformedMsg(msg, "kind is neither 'S' nor 'P'")
	}
	name, rest, ok := cstr(body[1:])
	if !ok {
		return 0, nil, malformedMsg(msg, "name not terminated")
	}
	if len(rest) != 0 {
		return 0, nil, malformedMsg(msg, "bytes after the name")
	}
	return body[0], name, nil
}

// Execute is a decoded Execute message.
type Execute struct {
	Portal []byte // empty for the unnamed portal
	// MaxRows is the row limit; 0 (or less) means none.
	MaxRows int32
}

// DecodeExecute decodes an Execute message body.
func DecodeExecute(body []byte) (Execute, error) {
	portal, rest, ok := cstr(body)
	if !ok {
		return Execute{}, malformedMsg("Execute", "portal name not terminated")
	}
	if len(rest) != 4 {
		return Execute{}, malformedMsg("Execute", "row limit is not 4 bytes")
	}
	return Execute{Portal: portal, MaxRows: int32(binary.BigEndian.Uint32(rest))}, nil
}
