package copysplit

import (
	"bytes"

	"github.com/pgshard/pgshard/wire"
)

// nextIndex caches where a byte next occurs in the p of one Write call, so
// that checking each line for it costs no more than one pass over p.
type nextIndex struct {
	b   byte
	pos int // -1: unknown; len(p): none left
}

// at returns the position of the first b at or after off in p.
func (x *nextIndex) at(p []byte, off int) int {
	if x.pos < off {
		if j := bytes.IndexByte(p[off:], x.b); j >= 0 {
			x.pos = off + j
		} else {
			x.pos = len(p)
		}
	}
	return x.pos
}

// writeText splits text or csv data.
func (s *Splitter) writeText(p []byte, emit EmitFunc) error {
	next := [3]nextIndex{{b: '\r', pos: -1}, {b: 0, pos: -1}, {b: '\\', pos: -1}}
	off := 0
	for off < len(p) && !s.ended {
		if len(s.buf) == 0 && !s.text.inLine {
			var err error
			if off, err = s.fastLines(p, off, &next, emit); err != nil || off == len(p) {
				return err
			}
		}
		n, end, code := s.text.scan(p[off:], s.maxRow-s.text.rowLen)
		if code != scanOK {
			return s.scanError(code)
		}
		if end == endNone {
			s.buf = append(s.buf, p[off:]...)
			return nil
		}
		row := p[off : off+n]
		if len(s.buf) > 0 {
			s.buf = append(s.buf, row...)
			row = s.buf
		}
		off += n
		err := s.textRow(row, end, emit)
		s.keepBuf()
		if err != nil {
			return err
		}
	}
	return nil
}

// fastLines handles, from off on, the lines of p that are complete and
// need no look-ahead or error handling: ended by the expected \n or \r\n,
// with no other \r, no NUL and no end marker. It returns the offset of the
// first line it leaves to the scanner. It finds line ends with IndexByte
// and Count, which are much faster than the scanner's byte loop.
func (s *Splitter) fastLines(p []byte, off int, next *[3]nextIndex, emit EmitFunc) (int, error) {
	sc := &s.text
	for off < len(p) && sc.eol != eolCR {
		var end, quotedNL int
		var ok bool
		if sc.csv {
			end, quotedNL, ok = csvLineEnd(p, off)
			ok = ok && p[off] != '\\'
		} else {
			end, ok = textLineEnd(p, off, sc.eol, &next[2])
		}
		dataEnd := end - 1
		if ok && sc.eol == eolCRNL {
			ok = dataEnd > off && p[dataEnd-1] == '\r'
			dataEnd--
		}
		if !ok || next[0].at(p, off) < dataEnd || next[1].at(p, off) < end || end-off > s.maxRow {
			return off, nil
		}
		if sc.eol == eolUnknown {
			sc.eol = eolNL
		} else if sc.eol == eolNL {
			sc.lineno += int64(quotedNL) // as the scanner counts them
		}
		sc.lineno++
		row, data := p[off:end], p[off:dataEnd]
		off = end
		if !s.hdrDone {
			s.header = append(s.header[:0], row...)
			s.hdrDone = true
			continue
		}
		if err := s.dataRow(row, data, emit); err != nil {
			return off, err
		}
	}
	return off, nil
}

// textLineEnd returns the end of the text line at p[off:]: after the
// first \n that no backslash escapes. It reports false when there is
// none, or when the line needs the scanner: a backslash before a dot (an
// end marker) or, with \r\n line endings, before the final \r. bs finds
// backslashes.
func textLineEnd(p []byte, off int, eol eolType, bs *nextIndex) (int, bool) {
	pos := off
	for {
		j := bytes.IndexByte(p[pos:], '\n')
		if j < 0 {
			return 0, false
		}
		nl := pos + j
		for {
			b := bs.at(p, pos)
			if b >= nl {
				return nl + 1, true
			}
			switch {
			case p[b+1] == '.' || eol == eolCRNL && b+2 == nl:
				return 0, false
			case b+1 == nl:
				// An escaped newline is data; the line goes on.
				pos = nl + 1
			default:
				pos = b + 2
				continue
			}
			break
		}
	}
}

// csvLineEnd returns the end of the csv line at p[off:]: after the first
// \n outside quotes, and how many \n it skipped inside quotes. It reports
// false when there is none.
func csvLineEnd(p []byte, off int) (end, quotedNL int, ok bool) {
	pos, quotes := off, 0
	for {
		j := bytes.IndexByte(p[pos:], '\n')
		if j < 0 {
			return 0, 0, false
		}
		quotes += bytes.Count(p[pos:pos+j], []byte{'"'})
		if quotes%2 == 0 {
			return pos + j + 1, quotedNL, true
		}
		quotedNL++
		pos += j + 1
	}
}

// textRow handles a line the scanner ended: the header, the end marker,
// or a row.
func (s *Splitter) textRow(row []byte, end endKind, emit EmitFunc) error {
	data := row
	switch end {
	case endEOL:
		data = row[:len(row)-s.text.termLen]
	case endMarker:
		// Forward what precedes \. (text allows data there), not \. itself.
		data = row[:s.text.markAt]
		row = data
		s.ended = true
	}
	if !s.hdrDone {
		s.header = append(s.header[:0], row...)
		s.hdrDone = true
		return nil
	}
	if end == endMarker && len(data) == 0 {
		return nil
	}
	return s.dataRow(row, data, emit)
}

// dataRow splits a row's data into fields, routes its key and emits it,
// checking the field count where PostgreSQL does: extra fields before the
// key's input function, missing ones after.
func (s *Splitter) dataRow(row, data []byte, emit EmitFunc) error {
	nf, key, null, serr := s.fields.split(data, s.key)
	line := s.text.lineno
	switch serr {
	case splitUnterminated:
		return lineError(line, data, "unterminated CSV quoted field")
	case splitNUL:
		e := lineError(line, data, s.nulMessage())
		e.Code = wire.SQLStateCharacterNotInRepertoire
		return e
	}
	if nf > s.ncols {
		return lineError(line, data, "extra data after last expected column")
	}
	if nf <= s.key {
		return lineError(line, data, `missing data for column "`+s.columnName(nf)+`"`)
	}
	if null {
		key = nil
	}
	shard, err := s.route(key, null)
	if err != nil {
		return routeError(err, line, s.columnName(s.key), key, null, false)
	}
	if nf < s.ncols {
		return lineError(line, data, `missing data for column "`+s.columnName(nf)+`"`)
	}
	return emit(shard, row)
}

// closeText ends text or csv data.
func (s *Splitter) closeText(emit EmitFunc) error {
	if s.ended {
		return nil
	}
	end, code := s.text.eof()
	if code != scanOK {
		return s.scanError(code)
	}
	if end == endNone {
		s.hdrDone = true // no header line: there is nothing to skip
		return nil
	}
	return s.textRow(s.buf, end, emit)
}

// scanError words a scanner error as PostgreSQL does.
func (s *Splitter) scanError(code scanErr) error {
	line := s.text.lineno
	csv := s.format == formatCSV
	switch code {
	case scanNUL:
		return &Error{Code: wire.SQLStateCharacterNotInRepertoire, Line: line, Message: s.nulMessage()}
	case scanCR:
		if csv {
			return formatError(line, "unquoted carriage return found in data", "Use quoted CSV field to represent carriage return.")
		}
		return formatError(line, "literal carriage return found in data", `Use "\r" to represent carriage return.`)
	case scanNL:
		if csv {
			return formatError(line, "unquoted newline found in data", "Use quoted CSV field to represent newline.")
		}
		return formatError(line, "literal newline found in data", `Use "\n" to represent newline.`)
	case scanCorrupt:
		return formatError(line, "end-of-copy marker corrupt", "")
	case scanStyle:
		return formatError(line, "end-of-copy marker does not match previous newline style", "")
	default:
		return s.tooLarge(line)
	}
}

// nulMessage is PostgreSQL's message for a NUL byte.
func (s *Splitter) nulMessage() string {
	return `invalid byte sequence for encoding "` + s.enc + `": 0x00`
}
