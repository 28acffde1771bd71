package copysplit

import (
	"encoding/binary"
	"fmt"

	"github.com/pgshard/pgshard/wire"
)

// This file splits binary COPY data as PostgreSQL 15's
// ReceiveCopyBinaryHeader and NextCopyFrom read it: an 11-byte signature,
// int32 flags, an int32 header extension length and the extension, then
// tuples (an int16 field count, then per field an int32 length, -1 for
// NULL, and the bytes), then an int16 -1 trailer.

// binarySignature starts binary COPY data.
const binarySignature = "PGCOPY\n\377\r\n\x00"

// binStage is what the binary scanner reads next.
type binStage uint8

const (
	binSig       binStage = iota // signature
	binFlags                     // int32 flags
	binExtLen                    // int32 header extension length
	binExt                       // header extension
	binCount                     // a tuple's int16 field count, or the trailer
	binFieldLen                  // a field's int32 length
	binFieldData                 // a field's bytes
	binEnded                     // after the trailer
)

// binScanner is the binary format's parse state between Write calls.
type binScanner struct {
	stage  binStage
	got    int    // bytes of the current integer read so far
	acc    uint32 // their value
	remain int    // bytes left of the header extension or field data
	field  int    // the field being read
	tlen   int    // bytes of the current tuple read so far
	keyOff int    // the key field's offset in the tuple
	keyLen int    // its length, -1 for NULL
	lineno int64  // PostgreSQL's cur_lineno: tuples started
}

// readInt reads a big-endian integer of size bytes from q, which may hold
// only part of it. It returns how many bytes it took and whether the
// integer is complete.
func (b *binScanner) readInt(q []byte, size int) (v uint32, n int, ok bool) {
	if b.got == 0 && len(q) >= size {
		if size == 2 {
			return uint32(binary.BigEndian.Uint16(q)), 2, true
		}
		return binary.BigEndian.Uint32(q), 4, true
	}
	for b.got < size && n < len(q) {
		b.acc = b.acc<<8 | uint32(q[n])
		b.got++
		n++
	}
	if b.got < size {
		return 0, n, false
	}
	v, b.acc, b.got = b.acc, 0, 0
	return v, n, true
}

// writeBinary splits binary data.
func (s *Splitter) writeBinary(p []byte, emit EmitFunc) error {
	b := &s.binary
	i := 0
	if b.stage < binCount {
		var err error
		if i, err = s.binaryHeader(p); err != nil {
			return err
		}
	}
	start := 0 // where the current tuple began in p, if it did
	for i < len(p) {
		switch b.stage {
		case binEnded:
			return formatError(b.lineno, "received copy data after EOF marker", "")
		case binCount:
			if b.tlen == 0 {
				b.lineno++
				start = i
			}
			v, n, ok := b.readInt(p[i:], 2)
			i += n
			b.tlen += n
			if !ok {
				break
			}
			count := int16(v)
			if count == -1 {
				b.stage, b.tlen = binEnded, 0
				s.buf = s.buf[:0]
				s.ended = true
				break
			}
			if int(count) != s.ncols {
				return formatError(b.lineno, fmt.Sprintf("row field count is %d, expected %d", count, s.ncols), "")
			}
			b.field, b.stage = 0, binFieldLen
		case binFieldLen:
			v, n, ok := b.readInt(p[i:], 4)
			i += n
			b.tlen += n
			if !ok {
				break
			}
			size := int32(v)
			switch {
			case size < -1:
				return s.fieldError(p, start, i, "invalid field size")
			case size == -1:
				if b.field == s.key {
					b.keyOff, b.keyLen = b.tlen, -1
				}
			case int64(b.tlen)+int64(size) > int64(s.maxRow):
				if err := s.routeBeforeError(p, start, i); err != nil {
					return err
				}
				e := s.tooLarge(b.lineno)
				e.Column = s.columnName(b.field)
				return e
			default:
				if b.field == s.key {
					b.keyOff, b.keyLen = b.tlen, int(size)
				}
				if size > 0 {
					b.remain, b.stage = int(size), binFieldData
					break
				}
			}
			if b.stage == binFieldLen {
				if err := s.nextField(p, start, i, emit); err != nil {
					return err
				}
			}
		case binFieldData:
			n := min(b.remain, len(p)-i)
			i += n
			b.tlen += n
			b.remain -= n
			if b.remain == 0 {
				b.stage = binFieldLen
				if err := s.nextField(p, start, i, emit); err != nil {
					return err
				}
			}
		}
	}
	if b.tlen > 0 {
		// The tuple goes on in the next Write.
		if len(s.buf) > 0 {
			start = 0
		}
		s.buf = append(s.buf, p[start:]...)
	}
	return nil
}

// nextField moves past a complete field; after the last one it routes and
// emits the tuple, which ends at p[i].
func (s *Splitter) nextField(p []byte, start, i int, emit EmitFunc) error {
	b := &s.binary
	b.field++
	if b.field < s.ncols {
		return nil
	}
	row := p[start:i]
	if len(s.buf) > 0 {
		s.buf = append(s.buf, p[:i]...)
		row = s.buf
	}
	b.stage, b.tlen = binCount, 0
	var key []byte
	if b.keyLen >= 0 {
		key = row[b.keyOff : b.keyOff+b.keyLen]
	}
	shard, err := s.route(key, b.keyLen < 0)
	if err != nil {
		s.keepBuf()
		return routeError(err, b.lineno, s.columnName(s.key), key, b.keyLen < 0, true)
	}
	err = emit(shard, row)
	s.keepBuf()
	return err
}

// fieldError reports an error in the field being read, at p[i], after
// routing the key if it was read before: PostgreSQL converts each field as
// it reads it, so a bad key is reported first.
func (s *Splitter) fieldError(p []byte, start, i int, msg string) error {
	if err := s.routeBeforeError(p, start, i); err != nil {
		return err
	}
	e := formatError(s.binary.lineno, msg, "")
	e.Column = s.columnName(s.binary.field)
	return e
}

// routeBeforeError routes the current tuple's key if it was read already,
// returning the route's error. The tuple so far is p[start:i], after
// s.buf if it began in an earlier Write.
func (s *Splitter) routeBeforeError(p []byte, start, i int) error {
	b := &s.binary
	if b.field <= s.key {
		return nil
	}
	if len(s.buf) > 0 {
		start = 0
	}
	s.buf = append(s.buf, p[start:i]...)
	var key []byte
	if b.keyLen >= 0 {
		key = s.buf[b.keyOff : b.keyOff+b.keyLen]
	}
	if _, err := s.route(key, b.keyLen < 0); err != nil {
		return routeError(err, b.lineno, s.columnName(s.key), key, b.keyLen < 0, true)
	}
	return nil
}

// binaryHeader reads the signature, flags and header extension from p
// into s.header and returns how many bytes it took.
func (s *Splitter) binaryHeader(p []byte) (int, error) {
	b := &s.binary
	i := 0
	for i < len(p) && b.stage < binCount {
		switch b.stage {
		case binSig:
			n := min(len(binarySignature)-len(s.header), len(p)-i)
			s.header = append(s.header, p[i:i+n]...)
			i += n
			if len(s.header) == len(binarySignature) {
				if string(s.header) != binarySignature {
					return i, headerError("COPY file signature not recognized")
				}
				b.stage = binFlags
			}
		case binFlags, binExtLen:
			v, n, ok := b.readInt(p[i:], 4)
			s.header = append(s.header, p[i:i+n]...)
			i += n
			if !ok {
				break
			}
			if b.stage == binFlags {
				if v&(1<<16) != 0 {
					return i, headerError("invalid COPY file header (WITH OIDS)")
				}
				if v>>16 != 0 {
					return i, headerError("unrecognized critical flags in COPY file header")
				}
				b.stage = binExtLen
				break
			}
			ext := int32(v)
			if ext < 0 {
				return i, headerError("invalid COPY file header (missing length)")
			}
			if int64(len(s.header))+int64(ext) > int64(s.maxRow) {
				return i, s.tooLarge(0)
			}
			b.remain, b.stage = int(ext), binExt
		case binExt:
			n := min(b.remain, len(p)-i)
			s.header = append(s.header, p[i:i+n]...)
			i += n
			b.remain -= n
		}
		if b.stage == binExt && b.remain == 0 {
			b.stage = binCount
			s.hdrDone = true
		}
	}
	return i, nil
}

// headerError is a 22P04 error in the binary header, which PostgreSQL
// reports without context.
func headerError(msg string) *Error {
	return &Error{Code: wire.SQLStateBadCopyFileFormat, Message: msg}
}

// closeBinary ends binary data. A stream may stop where a tuple would
// start (even after one byte of its field count) without the trailer.
func (s *Splitter) closeBinary(emit EmitFunc) error {
	b := &s.binary
	switch b.stage {
	case binSig:
		return headerError("COPY file signature not recognized")
	case binFlags:
		return headerError("invalid COPY file header (missing flags)")
	case binExtLen:
		return headerError("invalid COPY file header (missing length)")
	case binExt:
		return headerError("invalid COPY file header (wrong length)")
	case binFieldLen, binFieldData:
		return s.fieldError(nil, 0, 0, "unexpected EOF in COPY data")
	}
	return nil
}
