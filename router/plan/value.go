package plan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pgshard/pgshard/router/sqllex"
	"github.com/pgshard/pgshard/shardmap"
)

// valueSrc says where a key value comes from in one execution.
type valueSrc struct {
	lit   int32 // literal index in the normalized statement, or -1
	param int32 // parameter number ($n, from 1), or 0
	array bool  // the parameter or literal is an array of keys (= ANY)
}

func litSrc(i int) valueSrc   { return valueSrc{lit: int32(i)} }
func paramSrc(n int) valueSrc { return valueSrc{lit: -1, param: int32(n)} }

// execInput is what one Route call knows besides the template.
type execInput struct {
	sql     string
	norm    *normalized
	params  [][]byte
	formats []int16
}

var errNoParams = errors.New("the statement has parameters but no values were given")

// raw returns the source's raw value and whether it is in binary format;
// text literals are unquoted.
func (s valueSrc) raw(in *execInput) (string, bool, error) {
	if s.lit >= 0 {
		if int(s.lit) >= len(in.norm.lits) {
			return "", false, errors.New("literal out of range")
		}
		v, err := unquoteLiteral(in.norm.text(in.sql, int(s.lit)))
		return v, false, err
	}
	n := int(s.param) - 1
	if n < 0 || n >= len(in.params) {
		if in.params == nil {
			return "", false, errNoParams
		}
		return "", false, fmt.Errorf("parameter $%d has no value", n+1)
	}
	if in.params[n] == nil {
		return "", false, fmt.Errorf("parameter $%d is NULL", n+1)
	}
	bin := false
	switch len(in.formats) {
	case 0:
	case 1:
		bin = in.formats[0] == 1
	default:
		if n < len(in.formats) {
			bin = in.formats[n] == 1
		}
	}
	return string(in.params[n]), bin, nil
}

// unquoteLiteral returns the value of a normalized literal: a number as
// written (sign included), or the contents of a quoted string.
func unquoteLiteral(t string) (string, error) {
	if t == "" {
		return "", errors.New("empty literal")
	}
	switch c := t[0] | 0x20; {
	case t[0] == '\'':
		return unquoteSimple(t), nil
	case c == 'e' && len(t) > 1 && t[1] == '\'':
		body := t[2 : len(t)-1]
		if strings.IndexByte(body, '\\') >= 0 {
			return "", errors.New("escapes in an E'' key literal are not supported")
		}
		return strings.ReplaceAll(body, "''", "'"), nil
	case c == 'n' && len(t) > 1 && t[1] == '\'':
		return unquoteSimple(t[1:]), nil
	case c == 'b' || c == 'x':
		return "", errors.New("bit-string literal is not a key")
	}
	return t, nil
}

func unquoteSimple(t string) string {
	if len(t) < 2 || t[len(t)-1] != '\'' {
		return t[1:]
	}
	body := t[1 : len(t)-1]
	if strings.Contains(body, "''") {
		return strings.ReplaceAll(body, "''", "'")
	}
	return body
}

// shardFor returns the shard of one key value given as text or binary.
func shardFor(d *shardmap.Distribution, v string, bin bool) (string, error) {
	switch d.KeyType {
	case shardmap.KeyBigint:
		if bin {
			switch len(v) {
			case 8:
				return d.ShardForInt64(int64(binary.BigEndian.Uint64([]byte(v))))
			case 4:
				return d.ShardForInt64(int64(int32(binary.BigEndian.Uint32([]byte(v)))))
			case 2:
				return d.ShardForInt64(int64(int16(binary.BigEndian.Uint16([]byte(v)))))
			}
			return "", fmt.Errorf("binary integer key of %d bytes", len(v))
		}
		i, err := parseInt(v)
		if err != nil {
			return "", err
		}
		return d.ShardForInt64(i)
	case shardmap.KeyText:
		return d.ShardForText(v)
	case shardmap.KeyUUID:
		if bin {
			if len(v) != 16 {
				return "", fmt.Errorf("binary uuid key of %d bytes", len(v))
			}
			var u shardmap.UUID
			copy(u[:], v)
			return d.ShardForUUID(u)
		}
		u, err := shardmap.ParseUUID(strings.TrimSpace(v))
		if err != nil {
			return "", err
		}
		return d.ShardForUUID(u)
	}
	return "", fmt.Errorf("unknown key type %q", d.KeyType)
}

// parseInt parses a bigint key written as SQL would accept it for an
// int8: optional spaces and sign, decimal digits (underscores allowed).
func parseInt(v string) (int64, error) {
	v = strings.TrimSpace(v)
	if i, err := strconv.ParseInt(v, 10, 64); err == nil {
		return i, nil
	}
	s := strings.ReplaceAll(v, "_", "")
	if strings.HasPrefix(s, "- ") || strings.HasPrefix(s, "+ ") {
		s = s[:1] + strings.TrimSpace(s[1:])
	}
	i, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		return 0, fmt.Errorf("key %q is not a bigint", v)
	}
	return i, nil
}

// arrayElems splits the text form of a one-dimensional array, {1,2,"x"},
// calling f with each element; NULL elements are skipped.
func arrayElems(v string, f func(string) error) error {
	v = strings.TrimSpace(v)
	if len(v) < 2 || v[0] != '{' || v[len(v)-1] != '}' {
		return fmt.Errorf("%q is not an array", v)
	}
	body := v[1 : len(v)-1]
	for i := 0; i < len(body); {
		for i < len(body) && sqllex.IsSpace(body[i]) {
			i++
		}
		if i >= len(body) {
			break
		}
		var elem string
		if body[i] == '"' {
			var b strings.Builder
			j := i + 1
			for ; j < len(body) && body[j] != '"'; j++ {
				if body[j] == '\\' && j+1 < len(body) {
					j++
				}
				b.WriteByte(body[j])
			}
			elem = b.String()
			i = j + 1
			for i < len(body) && body[i] != ',' {
				i++
			}
		} else {
			if body[i] == '{' {
				return errors.New("multi-dimensional array of keys")
			}
			j := strings.IndexByte(body[i:], ',')
			if j < 0 {
				j = len(body) - i
			}
			elem = strings.TrimSpace(body[i : i+j])
			i += j
			if strings.EqualFold(elem, "null") {
				i++
				continue
			}
		}
		i++ // the comma
		if err := f(elem); err != nil {
			return err
		}
	}
	return nil
}

// binaryArrayElems walks a binary-format one-dimensional array.
func binaryArrayElems(v string, f func(string) error) error {
	b := []byte(v)
	if len(b) < 12 {
		return errors.New("short binary array")
	}
	ndim := binary.BigEndian.Uint32(b)
	if ndim == 0 {
		return nil
	}
	if ndim != 1 || len(b) < 20 {
		return errors.New("binary array of keys must have one dimension")
	}
	n := int(binary.BigEndian.Uint32(b[12:]))
	b = b[20:]
	for k := 0; k < n; k++ {
		if len(b) < 4 {
			return errors.New("truncated binary array")
		}
		l := int32(binary.BigEndian.Uint32(b))
		b = b[4:]
		if l < 0 {
			continue
		}
		if int(l) > len(b) {
			return errors.New("truncated binary array")
		}
		if err := f(string(b[:l])); err != nil {
			return err
		}
		b = b[l:]
	}
	return nil
}
