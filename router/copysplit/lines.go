package copysplit

// This file finds where text and csv lines end, as PostgreSQL 15's
// CopyReadLineText does (src/backend/commands/copyfromparse.c), but one
// byte at a time so that a line may span Write calls: each of its
// look-aheads (the byte after \r, after a backslash, after \.) is a state.

// eolType is the line ending PostgreSQL detects on the first line and
// then requires on every line.
type eolType uint8

const (
	eolUnknown eolType = iota
	eolNL
	eolCR
	eolCRNL
)

// lineState is where the scanner is inside a line.
type lineState uint8

const (
	lsNormal    lineState = iota
	lsCR                  // after an unquoted \r, eol unknown or \r\n: is \n next?
	lsBackslash           // after a backslash (text), or one starting a csv line
	lsDot                 // after \.
	lsDotCR               // after \.\r with \r\n line endings
)

// endKind is how a line ended.
type endKind uint8

const (
	endNone   endKind = iota // not yet
	endEOL                   // at its terminator, termLen bytes long
	endMarker                // at \. : the line's data is its first markAt bytes
	endEOF                   // at the end of the data, without terminator
)

// scanErr is a malformed-data condition the scanner found; the Splitter
// words it (see Splitter.scanError).
type scanErr uint8

const (
	scanOK       scanErr = iota
	scanNUL              // a NUL byte, which PostgreSQL's encoding check rejects
	scanCR               // \r where the line ending forbids it
	scanNL               // \n where the line ending forbids it
	scanCorrupt          // \. followed by other than a newline (text)
	scanStyle            // \. followed by the wrong newline
	scanTooLarge         // the line exceeds the row size limit
)

// textSpecial and csvSpecial mark the bytes the scanner must look at in
// lsNormal; it skips runs of other bytes.
var textSpecial, csvSpecial [256]bool

func init() {
	for _, c := range []byte{'\n', '\r', '\\', 0} {
		textSpecial[c] = true
	}
	for _, c := range []byte{'\n', '\r', '"', '\\', 0} {
		csvSpecial[c] = true
	}
}

// lineScanner finds line ends in text or csv COPY data. Its zero value,
// with csv and first set, is at the start of the data.
type lineScanner struct {
	csv     bool
	eol     eolType
	st      lineState
	inQuote bool  // csv: inside a quoted field
	first   bool  // csv: the next byte is the line's first
	inLine  bool  // a line has started (and is counted in lineno)
	rowLen  int   // bytes of the current line consumed by earlier scans
	markAt  int   // offset in the line of the backslash of a possible \.
	termLen int   // length of the terminator of the line that just ended
	lineno  int64 // PostgreSQL's cur_lineno
	pend    byte  // csv: a \\ or \r read but not handled, until the next byte shows it is no NUL
	pendAt  int   // its offset in the line
}

// scan consumes bytes of the current line from p, which must not be
// empty. It returns how many bytes of p belong to the line and how the
// line ended; with endNone all of p was consumed and the line goes on.
// A line ended by \r alone may end before p's first byte (n == 0). limit
// is how many more bytes the line may consume.
func (sc *lineScanner) scan(p []byte, limit int) (n int, end endKind, err scanErr) {
	if !sc.inLine {
		sc.inLine = true
		sc.lineno++
	}
	base := sc.rowLen
	if sc.pend != 0 {
		if p[0] == 0 {
			return 0, endNone, scanNUL
		}
		ended, err := sc.handlePend()
		if err != scanOK {
			return 0, endNone, err
		}
		if ended {
			return sc.endLine(0, 1)
		}
	}
	stop := min(len(p), max(limit, 0))
	i := 0
	for i < len(p) {
		c := p[i]
		if i >= limit && (sc.st != lsCR || c == '\n') {
			return i, endNone, scanTooLarge
		}
		if c == 0 {
			return i, endNone, scanNUL
		}
		switch sc.st {
		case lsNormal:
			if sc.csv {
				if c == '\\' || c == '\r' {
					// PostgreSQL reads the byte after these first, and fails
					// there on a NUL before it handles them.
					if i+1 == len(p) {
						sc.pend, sc.pendAt = c, base+i
						sc.rowLen = base + len(p)
						return len(p), endNone, scanOK
					}
					if p[i+1] == 0 {
						return i + 1, endNone, scanNUL
					}
					i++
					ended, err := sc.csvByte(c, base+i-1)
					if err != scanOK {
						return i, endNone, err
					}
					if ended {
						return sc.endLine(i, 1)
					}
					continue
				}
				sc.first = false
				if !csvSpecial[c] {
					for i++; i < stop && !csvSpecial[p[i]]; i++ {
					}
					continue
				}
				switch c {
				case '"':
					sc.inQuote = !sc.inQuote
					i++
					continue
				case '\n':
					if sc.inQuote {
						if sc.eol == eolNL {
							sc.lineno++
						}
						i++
						continue
					}
				}
			} else if !textSpecial[c] {
				for i++; i < stop && !textSpecial[p[i]]; i++ {
				}
				continue
			}
			switch c {
			case '\n':
				if sc.eol == eolCR || sc.eol == eolCRNL {
					return i, endNone, scanNL
				}
				sc.eol = eolNL
				return sc.endLine(i+1, 1)
			case '\r':
				switch sc.eol {
				case eolNL:
					return i, endNone, scanCR
				case eolCR:
					return sc.endLine(i+1, 1)
				}
				sc.st = lsCR
				i++
			case '\\': // text only: csv handles it and \r above
				sc.markAt = base + i
				sc.st = lsBackslash
				i++
			}
		case lsCR:
			sc.st = lsNormal
			if c == '\n' {
				sc.eol = eolCRNL
				return sc.endLine(i+1, 2)
			}
			if sc.eol == eolCRNL {
				return i, endNone, scanCR
			}
			// The first line ends with \r alone; c begins the next line.
			sc.eol = eolCR
			return sc.endLine(i, 1)
		case lsBackslash:
			if c == '.' {
				sc.st = lsDot
				i++
				continue
			}
			sc.st = lsNormal
			if !sc.csv {
				i++ // text: the escaped byte is data, even \r or \n
			}
			// csv: the backslash was data; c is read as usual.
		case lsDot:
			if sc.eol == eolCRNL {
				switch {
				case c == '\r':
					sc.st = lsDotCR
					i++
				case !sc.csv && c == '\n':
					return i, endNone, scanStyle
				case !sc.csv:
					return i, endNone, scanCorrupt
				case c == '\n':
					// csv: \. was data, and then an unquoted \n.
					return i, endNone, scanNL
				default:
					sc.st = lsNormal // csv: \. was data
				}
				continue
			}
			if c != '\r' && c != '\n' {
				if !sc.csv {
					return i, endNone, scanCorrupt
				}
				sc.st = lsNormal // csv: \. was data
				continue
			}
			if sc.eol == eolNL && c != '\n' || sc.eol == eolCR && c != '\r' {
				return i, endNone, scanStyle
			}
			return sc.endMarker(i + 1)
		case lsDotCR:
			switch {
			case c == '\n':
				return sc.endMarker(i + 1)
			case c == '\r':
				return i, endNone, scanStyle
			case !sc.csv:
				return i, endNone, scanCorrupt
			default:
				// csv: \. was data, then an \r without \n.
				return i, endNone, scanCR
			}
		}
	}
	sc.rowLen = base + len(p)
	return len(p), endNone, scanOK
}

// eof ends the data: it says how the current line, if any, ends there.
func (sc *lineScanner) eof() (endKind, scanErr) {
	if !sc.inLine {
		return endNone, scanOK
	}
	if sc.pend != 0 {
		ended, err := sc.handlePend()
		if err != scanOK {
			return endNone, err
		}
		if ended {
			sc.termLen = 1
			sc.reset()
			return endEOL, scanOK
		}
	}
	switch sc.st {
	case lsCR:
		if sc.eol == eolCRNL {
			return endNone, scanCR
		}
		sc.eol = eolCR
		sc.termLen = 1
		return endEOL, scanOK
	case lsDot:
		if !sc.csv {
			return endNone, scanCorrupt
		}
	case lsDotCR:
		if !sc.csv {
			return endNone, scanCorrupt
		}
		return endNone, scanCR
	}
	// A backslash (text) or \. (csv) just before the end is data.
	return endEOF, scanOK
}

// handlePend handles the pending csv byte.
func (sc *lineScanner) handlePend() (ended bool, err scanErr) {
	c := sc.pend
	sc.pend = 0
	return sc.csvByte(c, sc.pendAt)
}

// csvByte handles a \\ or \r in csv data, at offset at in the line. It
// reports whether the \r ends the line.
func (sc *lineScanner) csvByte(c byte, at int) (ended bool, err scanErr) {
	first := sc.first
	sc.first = false
	if c == '\\' {
		// Only a backslash that starts a line may start an end marker.
		if first {
			sc.markAt, sc.st = at, lsBackslash
		}
		return false, scanOK
	}
	if sc.inQuote {
		// PostgreSQL counts quoted \r as a new line unless lines end in \n.
		if sc.eol != eolNL {
			sc.lineno++
		}
		return false, scanOK
	}
	switch sc.eol {
	case eolNL:
		return false, scanCR
	case eolCR:
		return true, scanOK
	}
	sc.st = lsCR
	return false, scanOK
}

// endLine ends the current line n bytes into the scanned slice, with a
// terminator term bytes long.
func (sc *lineScanner) endLine(n, term int) (int, endKind, scanErr) {
	sc.termLen = term
	sc.reset()
	return n, endEOL, scanOK
}

// endMarker ends the data at an end marker n bytes into the scanned slice.
func (sc *lineScanner) endMarker(n int) (int, endKind, scanErr) {
	sc.reset()
	return n, endMarker, scanOK
}

// reset readies the scanner for the next line.
func (sc *lineScanner) reset() {
	sc.st, sc.inQuote, sc.first, sc.inLine, sc.rowLen, sc.pend = lsNormal, false, true, false, 0, 0
}
