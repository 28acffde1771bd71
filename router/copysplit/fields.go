package copysplit

import "bytes"

// This file splits a complete text or csv line into fields as PostgreSQL
// 15's CopyReadAttributesText and CopyReadAttributesCSV do, counting them
// and decoding only the key.

// fieldScanner splits lines; it keeps the buffer a decoded key is built
// in between lines.
type fieldScanner struct {
	csv   bool
	delim byte
	key   []byte // decoded key of the last line that needed decoding
}

// splitErr is a malformed line found while splitting it.
type splitErr uint8

const (
	splitOK           splitErr = iota
	splitUnterminated          // csv: a quoted field runs to the end of the line
	splitNUL                   // text: an escape (\0, \x00) makes a NUL byte
)

// split returns the number of fields in line (without its terminator)
// and field k's value: de-escaped (text) or unquoted (csv), or null. key
// may alias line or an internal buffer and is valid until the next call.
func (fs *fieldScanner) split(line []byte, k int) (nf int, key []byte, null bool, err splitErr) {
	special := byte('\\')
	if fs.csv {
		special = '"'
	}
	if bytes.IndexByte(line, special) < 0 {
		// Nothing to decode: fields are what lies between delimiters.
		nf = bytes.Count(line, []byte{fs.delim}) + 1
		if k < nf {
			key = nthField(line, fs.delim, k)
			null = fs.csv && len(key) == 0
		}
		return nf, key, null, splitOK
	}
	if fs.csv {
		return fs.splitCSV(line, k)
	}
	return fs.splitText(line, k)
}

// nthField returns field k of line, which has more than k fields.
func nthField(line []byte, delim byte, k int) []byte {
	for ; k > 0; k-- {
		line = line[bytes.IndexByte(line, delim)+1:]
	}
	if j := bytes.IndexByte(line, delim); j >= 0 {
		return line[:j]
	}
	return line
}

// splitText splits a text-format line that has backslashes. Like
// PostgreSQL it rejects, in field order, a field that is not NULL and
// whose escapes make a NUL byte, which no server encoding accepts.
// (PostgreSQL also checks other escaped bytes at or above 0x80 against the
// server encoding; that is left to the shards.)
func (fs *fieldScanner) splitText(line []byte, k int) (nf int, key []byte, null bool, err splitErr) {
	i := 0
	for {
		start := i
		end, found, nul := i, false, false
		if nf == k {
			fs.key = fs.key[:0]
			for {
				end = i
				if i >= len(line) {
					break
				}
				c := line[i]
				i++
				if c == fs.delim {
					found = true
					break
				}
				if c == '\\' {
					if i >= len(line) {
						break // a trailing backslash is dropped
					}
					var z bool
					c, i, z = unescape(line, i)
					nul = nul || z
				}
				fs.key = append(fs.key, c)
			}
		} else {
			for {
				for i < len(line) && line[i] != fs.delim && line[i] != '\\' {
					i++
				}
				end = i
				if i >= len(line) {
					break
				}
				i++
				if line[i-1] == fs.delim {
					found = true
					break
				}
				if i >= len(line) {
					break
				}
				var z bool
				_, i, z = unescape(line, i)
				nul = nul || z
			}
		}
		// NULL is matched against the raw field, before de-escaping.
		raw := line[start:end]
		isNull := len(raw) == 2 && raw[0] == '\\' && raw[1] == 'N'
		if nul && !isNull {
			return 0, nil, false, splitNUL
		}
		if nf == k {
			null = isNull
			if !null {
				key = fs.key
			}
		}
		nf++
		if !found {
			return nf, key, null, splitOK
		}
	}
}

// unescape decodes the escape whose backslash precedes line[i]: it
// returns the byte it stands for, the offset after it, and whether an
// octal or hex escape made a NUL.
func unescape(line []byte, i int) (c byte, next int, nul bool) {
	c = line[i]
	i++
	switch c {
	case '0', '1', '2', '3', '4', '5', '6', '7':
		v := c - '0'
		for n := 0; n < 2 && i < len(line) && line[i] >= '0' && line[i] <= '7'; n++ {
			v = v<<3 + line[i] - '0' // wraps like PostgreSQL's & 0377
			i++
		}
		return v, i, v == 0
	case 'x':
		if i < len(line) && isHex(line[i]) {
			v := hexVal(line[i])
			i++
			if i < len(line) && isHex(line[i]) {
				v = v<<4 + hexVal(line[i])
				i++
			}
			return v, i, v == 0
		}
	case 'b':
		c = '\b'
	case 'f':
		c = '\f'
	case 'n':
		c = '\n'
	case 'r':
		c = '\r'
	case 't':
		c = '\t'
	case 'v':
		c = '\v'
	}
	// Any other byte stands for itself.
	return c, i, false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hexVal(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// splitCSV splits a csv line that has quotes. QUOTE and ESCAPE are both
// the double quote: inside quotes "" is one quote.
func (fs *fieldScanner) splitCSV(line []byte, k int) (nf int, key []byte, null bool, err splitErr) {
	i := 0
	for {
		start := i
		decode := nf == k
		if decode {
			fs.key = fs.key[:0]
		}
		sawQuote, found := false, false
		end := i
	field:
		for {
			// Outside quotes.
			for {
				end = i
				if i >= len(line) {
					break field
				}
				c := line[i]
				i++
				if c == fs.delim {
					found = true
					break field
				}
				if c == '"' {
					sawQuote = true
					break
				}
				if decode {
					fs.key = append(fs.key, c)
				}
			}
			// Inside quotes.
			for {
				if i >= len(line) {
					return 0, nil, false, splitUnterminated
				}
				c := line[i]
				i++
				if c == '"' {
					if i < len(line) && line[i] == '"' {
						i++
					} else {
						break
					}
				}
				if decode {
					fs.key = append(fs.key, c)
				}
			}
		}
		if decode {
			if !sawQuote && end == start {
				null = true
			} else {
				key = fs.key
			}
		}
		nf++
		if !found {
			return nf, key, null, splitOK
		}
	}
}
