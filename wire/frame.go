package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// HeaderLen is the size of a typed message header: type byte + int32 length.
const HeaderLen = 5

// DefaultMaxMessageSize bounds a single message body. PostgreSQL itself
// refuses messages over 1 GiB; most are tiny.
const DefaultMaxMessageSize = 1 << 30

// ErrMessageTooLarge reports a frame whose declared length exceeds the limit.
var ErrMessageTooLarge = errors.New("message too large")

// BufferedReader is what a FrameReader reads from: a *bufio.Reader, or a
// reader whose methods mean what bufio.Reader's do.
type BufferedReader interface {
	io.Reader
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
	Buffered() int
	Size() int
}

var _ BufferedReader = (*bufio.Reader)(nil)

// FrameReader reads typed protocol frames from a buffered stream without
// decoding them. It is the hot-path reader for both directions.
type FrameReader struct {
	r       BufferedReader
	buf     []byte
	maxSize int
}

// NewFrameReader returns a FrameReader reading from r. maxSize bounds a
// message body; 0 means DefaultMaxMessageSize.
func NewFrameReader(r BufferedReader, maxSize int) *FrameReader {
	if maxSize <= 0 {
		maxSize = DefaultMaxMessageSize
	}
	return &FrameReader{r: r, maxSize: maxSize}
}

// Buffered reports how many bytes can be read without blocking. A caller
// that batches writes flushes when this is zero.
func (fr *FrameReader) Buffered() int { return fr.r.Buffered() }

// Next reads one frame and returns its type and the whole frame, header
// included. The returned slice is valid only until the next call to Next;
// it aliases the reader's buffer when the frame fits in it.
func (fr *FrameReader) Next() (byte, []byte, error) {
	hdr, err := fr.r.Peek(HeaderLen)
	if err != nil {
		if err == io.EOF && len(hdr) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	typ := hdr[0]
	n := int(int32(binary.BigEndian.Uint32(hdr[1:])))
	if n < 4 {
		return typ, nil, fmt.Errorf("invalid length %d for message type %q: %w", n, typ, ErrMalformed)
	}
	if n-4 > fr.maxSize {
		return typ, nil, fmt.Errorf("message type %q declares %d bytes (limit %d): %w", typ, n-4, fr.maxSize, ErrMessageTooLarge)
	}
	total := n + 1
	if total <= fr.r.Size() {
		frame, err := fr.r.Peek(total)
		if err != nil {
			return typ, nil, unexpected(err)
		}
		_, _ = fr.r.Discard(total)
		return typ, frame, nil
	}
	// Grow the buffer as bytes arrive, not by the declared length, so a
	// peer that declares a huge message and sends little costs little.
	buf := fr.buf[:0]
	for len(buf) < total {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(total, max(2*cap(buf), minLargeChunk)))
			copy(nb, buf)
			buf = nb
		}
		n, err := io.ReadFull(fr.r, buf[len(buf):min(cap(buf), total)])
		buf = buf[:len(buf)+n]
		if err != nil {
			fr.buf = buf[:0]
			return typ, nil, unexpected(err)
		}
	}
	fr.buf = buf
	return typ, buf, nil
}

// minLargeChunk is the first allocation for a frame larger than the
// reader's buffer; it doubles from there.
const minLargeChunk = 64 << 10

// ReleaseLarge drops a large frame buffer kept from an earlier Next so an
// idle session does not pin it.
func (fr *FrameReader) ReleaseLarge() {
	if cap(fr.buf) > 1<<20 {
		fr.buf = nil
	}
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ErrMalformed reports a message that violates the protocol's framing.
var ErrMalformed = errors.New("malformed message")
