package merge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5/pgproto3"
)

// ErrMalformed reports a frame from a shard that is not what the protocol
// allows at that point (wrong type byte, bad lengths, wrong column count).
var ErrMalformed = errors.New("merge: malformed message")

const headerLen = 5 // type byte + int32 length

// frameBody checks a raw frame's header and returns its body.
func frameBody(frame []byte, typ byte) ([]byte, error) {
	if len(frame) < headerLen || frame[0] != typ {
		return nil, fmt.Errorf("%w: want message type %q", ErrMalformed, typ)
	}
	if n := int(binary.BigEndian.Uint32(frame[1:])); n != len(frame)-1 {
		return nil, fmt.Errorf("%w: %q length %d for a %d-byte frame", ErrMalformed, typ, n, len(frame))
	}
	return frame[headerLen:], nil
}

// decodeRowDescription decodes a RowDescription frame. The result does not
// alias frame.
func decodeRowDescription(frame []byte) ([]pgproto3.FieldDescription, error) {
	body, err := frameBody(frame, 'T')
	if err != nil {
		return nil, err
	}
	var rd pgproto3.RowDescription
	if err := rd.Decode(body); err != nil {
		return nil, fmt.Errorf("%w: RowDescription: %w", ErrMalformed, err)
	}
	fields := make([]pgproto3.FieldDescription, len(rd.Fields))
	for i, f := range rd.Fields {
		f.Name = append([]byte(nil), f.Name...)
		if f.Format != pgproto3.TextFormat && f.Format != pgproto3.BinaryFormat {
			return nil, fmt.Errorf("%w: column %q has format code %d", ErrMalformed, f.Name, f.Format)
		}
		fields[i] = f
	}
	return fields, nil
}

// splitDataRow splits a DataRow frame into its ncols values (nil for NULL;
// a non-nil empty slice for an empty value). The values alias frame.
func splitDataRow(frame []byte, ncols int, vals [][]byte) ([][]byte, error) {
	body, err := frameBody(frame, 'D')
	if err != nil {
		return nil, err
	}
	if len(body) < 2 || int(binary.BigEndian.Uint16(body)) != ncols {
		return nil, fmt.Errorf("%w: DataRow does not have the %d columns of the RowDescription", ErrMalformed, ncols)
	}
	vals = vals[:0]
	off := 2
	for c := 0; c < ncols; c++ {
		if off+4 > len(body) {
			return nil, fmt.Errorf("%w: DataRow truncated", ErrMalformed)
		}
		n := int32(binary.BigEndian.Uint32(body[off:]))
		off += 4
		if n < 0 {
			vals = append(vals, nil)
			continue
		}
		if int(n) > len(body)-off {
			return nil, fmt.Errorf("%w: DataRow value overruns the message", ErrMalformed)
		}
		vals = append(vals, body[off:off+int(n):off+int(n)])
		off += int(n)
	}
	if off != len(body) {
		return nil, fmt.Errorf("%w: DataRow has trailing bytes", ErrMalformed)
	}
	return vals, nil
}

// appendDataRow appends a DataRow frame holding vals (nil for NULL).
func appendDataRow(dst []byte, vals [][]byte) []byte {
	start := len(dst)
	dst = append(dst, 'D', 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(vals)))
	for _, v := range vals {
		if v == nil {
			dst = binary.BigEndian.AppendUint32(dst, 0xFFFFFFFF)
			continue
		}
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
		dst = append(dst, v...)
	}
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}

// AppendCommandComplete appends the CommandComplete frame the client gets
// after n merged rows: tag "SELECT n".
func AppendCommandComplete(dst []byte, n int64) []byte {
	start := len(dst)
	dst = append(dst, 'C', 0, 0, 0, 0)
	dst = append(dst, "SELECT "...)
	dst = strconv.AppendInt(dst, n, 10)
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}
