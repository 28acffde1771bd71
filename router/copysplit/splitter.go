package copysplit

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
)

// RouteFunc maps a row's sharding key to a shard. key is the column's
// decoded value: text and csv de-escaped or unquoted, binary the field's
// raw bytes in the column type's binary format. null reports a NULL key
// (key is then nil). key is only valid during the call.
//
// route is called in PostgreSQL's column order: after the row is checked
// for extra fields but before it is checked for missing ones (binary:
// before later fields are read), so a row it routed may still fail.
// An error stops the COPY. Return an *Error (InvalidInput, for one) or an
// error with a SQLState method to choose the SQLSTATE the client sees;
// the splitter adds the line and column context.
type RouteFunc func(key []byte, null bool) (shard int, err error)

// EmitFunc receives one row for one shard: the row's bytes exactly as the
// client sent them, to forward unchanged. row is only valid during the
// call; copy it to keep it. An error stops the COPY and is returned by
// Write or Close unchanged.
type EmitFunc func(shard int, row []byte) error

// DefaultMaxRowSize is the default row size limit: PostgreSQL's largest
// line buffer (1 GB - 1).
const DefaultMaxRowSize = 1<<30 - 1

// Option configures a Splitter.
type Option func(*config)

type config struct {
	names    []string
	maxRow   int
	encoding string
}

// WithColumnNames gives the names of the COPY column list, in order, for
// error messages (`missing data for column "name"`). Without it columns
// are named by position ("#2").
func WithColumnNames(names ...string) Option {
	return func(c *config) { c.names = names }
}

// WithMaxRowSize limits a row (text and csv: a line with its terminator;
// binary: a tuple; the header counts as a row) to n bytes; a longer one is
// a 54000 error. A row that spans CopyData messages is buffered, so this
// bounds the memory a client can make the splitter hold. The default is
// DefaultMaxRowSize.
func WithMaxRowSize(n int) Option {
	return func(c *config) { c.maxRow = n }
}

// WithClientEncoding names the session's client_encoding (default
// "UTF8"). New refuses encodings whose multibyte characters can contain
// ASCII bytes (SJIS, BIG5, GBK, UHC, GB18030, JOHAB and their aliases):
// PostgreSQL converts those before parsing, the splitter cannot. The name,
// spelled as the server reports it (ParameterStatus), also appears in the
// error for a NUL byte.
func WithClientEncoding(name string) Option {
	return func(c *config) { c.encoding = name }
}

// format is the COPY format.
type format uint8

const (
	formatText format = iota
	formatCSV
	formatBinary
)

// Splitter splits the data of one COPY ... FROM STDIN into per-shard row
// streams. Feed it every CopyData payload with Write and end with Close at
// CopyDone. It is not safe for concurrent use.
type Splitter struct {
	format  format
	delim   byte
	ncols   int
	key     int
	route   RouteFunc
	names   []string
	maxRow  int
	enc     string
	binary  binScanner
	text    lineScanner
	fields  fieldScanner
	buf     []byte // the current row's bytes from earlier Writes
	header  []byte // see Header
	hdrDone bool   // header is complete
	ended   bool   // end marker or binary trailer read
	closed  bool
	err     error // first error; every later call returns it
}

// bufKeep is the largest row buffer kept between rows; a larger one,
// left by a long row, is dropped so it does not pin memory.
const bufKeep = 1 << 20

// New returns a Splitter for spec (a CopyIn plan's Copy). route maps each
// row's key to a shard. New returns an *Error with SQLSTATE 0A000 or
// 22023 for options PostgreSQL or the splitter refuses (an unknown format,
// HEADER with binary, a bad delimiter, an unsafe client encoding), and a
// plain error for a spec that is not valid.
//
// Only PostgreSQL's defaults are supported for the options CopySpec does
// not carry: NULL \N (text) or the empty string (csv), QUOTE and ESCAPE
// the double quote, and no FORCE_NOT_NULL, FORCE_NULL or ENCODING. The
// planner must refuse the others, or rows would be split wrongly.
func New(spec *plan.CopySpec, route RouteFunc, opts ...Option) (*Splitter, error) {
	if spec == nil || route == nil {
		return nil, errors.New("copysplit: nil spec or route")
	}
	c := config{maxRow: DefaultMaxRowSize, encoding: "UTF8"}
	for _, o := range opts {
		o(&c)
	}
	if spec.Columns < 1 || spec.KeyColumn < 0 || spec.KeyColumn >= spec.Columns {
		return nil, fmt.Errorf("copysplit: key column %d out of range for %d columns", spec.KeyColumn, spec.Columns)
	}
	if c.names != nil && len(c.names) != spec.Columns {
		return nil, fmt.Errorf("copysplit: %d column names for %d columns", len(c.names), spec.Columns)
	}
	if c.maxRow < 1 {
		return nil, fmt.Errorf("copysplit: row size limit %d is not positive", c.maxRow)
	}
	s := &Splitter{delim: spec.Delimiter, ncols: spec.Columns, key: spec.KeyColumn, route: route,
		names: c.names, maxRow: c.maxRow, enc: c.encoding}
	switch strings.ToLower(spec.Format) {
	case "text", "":
		s.format = formatText
	case "csv":
		s.format = formatCSV
	case "binary":
		s.format = formatBinary
	default:
		return nil, &Error{Code: wire.SQLStateInvalidParameterValue, Message: `COPY format "` + spec.Format + `" not recognized`}
	}
	if s.format == formatBinary {
		if spec.Header {
			return nil, &Error{Code: wire.SQLStateFeatureNotSupported, Message: "cannot specify HEADER in BINARY mode"}
		}
		return s, nil
	}
	if err := checkDelimiter(s.delim, s.format == formatCSV); err != nil {
		return nil, err
	}
	if unsafeEncoding(c.encoding) {
		return nil, &Error{Code: wire.SQLStateFeatureNotSupported,
			Message: fmt.Sprintf("COPY into a sharded table in client encoding %s is not supported", c.encoding),
			Hint:    "Set client_encoding to UTF8, or use FORMAT binary."}
	}
	s.text = lineScanner{csv: s.format == formatCSV, first: true}
	s.fields = fieldScanner{csv: s.format == formatCSV, delim: s.delim}
	s.hdrDone = !spec.Header
	return s, nil
}

// checkDelimiter applies PostgreSQL's DELIMITER checks with their
// SQLSTATEs (the planner already requires one byte).
func checkDelimiter(d byte, csv bool) error {
	switch {
	case d == '\n' || d == '\r':
		return &Error{Code: wire.SQLStateInvalidParameterValue, Message: "COPY delimiter cannot be newline or carriage return"}
	case !csv && strings.IndexByte(`\.abcdefghijklmnopqrstuvwxyz0123456789`, d) >= 0:
		return &Error{Code: wire.SQLStateInvalidParameterValue, Message: `COPY delimiter cannot be "` + string(rune(d)) + `"`}
	case !csv && d == 'N':
		return &Error{Code: wire.SQLStateFeatureNotSupported, Message: "COPY delimiter must not appear in the NULL specification"}
	case csv && d == '"':
		return &Error{Code: wire.SQLStateInvalidParameterValue, Message: "COPY delimiter and quote must be different"}
	case d == 0 || d >= 0x80:
		// PostgreSQL parses after converting to the server encoding; a
		// non-ASCII delimiter byte may mean another byte in the client's.
		return &Error{Code: wire.SQLStateFeatureNotSupported, Message: "COPY delimiter must be an ASCII character for a sharded table"}
	}
	return nil
}

// unsafeEncoding reports client encodings whose multibyte characters may
// contain bytes below 0x80, named as PostgreSQL matches them (case and
// punctuation ignored, aliases included).
func unsafeEncoding(name string) bool {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	switch b.String() {
	case "sjis", "mskanji", "shiftjis", "win932", "windows932", "shiftjis2004",
		"big5", "win950", "windows950", "gbk", "win936", "windows936",
		"uhc", "win949", "windows949", "gb18030", "johab":
		return true
	}
	return false
}

// Write consumes the payload of one CopyData message. Rows may span
// messages, and a message may hold many rows or part of one. For every
// row it completes it calls route with the row's key, then emit with the
// shard and the row's bytes; a row that lies inside p is passed as a
// slice of p, one that spans messages from an internal buffer.
//
// After a text or csv end marker (\.) the rest of the data is ignored, as
// PostgreSQL does. After the first error every call returns that error.
func (s *Splitter) Write(p []byte, emit EmitFunc) error {
	if s.err != nil {
		return s.err
	}
	if s.closed {
		return errors.New("copysplit: Write after Close")
	}
	var err error
	if s.format == formatBinary {
		err = s.writeBinary(p, emit)
	} else {
		err = s.writeText(p, emit)
	}
	if err != nil {
		s.err = err
	}
	return err
}

// Close ends the data at CopyDone: it emits a last text or csv line that
// has no terminator (PostgreSQL reads it as a row) and reports a
// truncated row, binary header or end marker as PostgreSQL does. A binary
// stream may end without its trailer, as PostgreSQL allows.
func (s *Splitter) Close(emit EmitFunc) error {
	if s.err != nil {
		return s.err
	}
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.format == formatBinary {
		err = s.closeBinary(emit)
	} else {
		err = s.closeText(emit)
	}
	if err != nil {
		s.err = err
	}
	s.buf = nil
	return err
}

// Header returns the bytes every shard's stream must start with, and
// whether they are known yet. Binary: the client's signature, flags and
// header extension, known once they were written. Text or csv with
// HEADER: the client's header line with its terminator (each shard skips
// it as PostgreSQL would), known once the first line is complete — before
// the first row is emitted, so emit may call Header — or at Close.
// Otherwise it is (nil, true).
//
// A shard stream that gets no rows needs the header too in binary format:
// PostgreSQL rejects an empty binary stream.
func (s *Splitter) Header() (header []byte, complete bool) {
	if !s.hdrDone {
		return nil, false
	}
	return s.header, true
}

// Trailer returns the bytes every shard's stream must end with: the
// 2-byte -1 field count in binary format, nil for text and csv. The
// client's own trailer, and its text end marker, are never emitted.
func (s *Splitter) Trailer() []byte {
	if s.format == formatBinary {
		return []byte{0xff, 0xff}
	}
	return nil
}

// Ended reports whether the data's end was read: a text or csv end
// marker, or the binary trailer. Later data is ignored (text, csv) or an
// error (binary, as PostgreSQL reports it).
func (s *Splitter) Ended() bool { return s.ended }

// columnName names column i (0-based) for messages.
func (s *Splitter) columnName(i int) string {
	if s.names != nil {
		return s.names[i]
	}
	return "#" + strconv.Itoa(i+1)
}

// tooLarge is the error for a row over the size limit.
func (s *Splitter) tooLarge(line int64) *Error {
	return &Error{Code: wire.SQLStateProgramLimitExceeded, Message: "COPY row is too large",
		Detail: fmt.Sprintf("A row may hold at most %d bytes.", s.maxRow), Line: line}
}

// keepBuf empties the row buffer, dropping it when a long row grew it.
func (s *Splitter) keepBuf() {
	if cap(s.buf) > bufKeep {
		s.buf = nil
	} else {
		s.buf = s.buf[:0]
	}
}
