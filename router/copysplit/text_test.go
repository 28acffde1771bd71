package copysplit

import (
	"slices"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/router/plan"
)

// textCase is a text or csv input and what PostgreSQL 15 makes of it.
// The expectations were checked against a PostgreSQL 15 server (COPY into
// t(a, b) FROM STDIN): the rows it inserts, or its error and CONTEXT.
type textCase struct {
	name   string
	spec   *plan.CopySpec
	in     string
	header string // the header line forwarded to each shard
	rows   []row  // rows emitted, also those before an error
	err    string // errString of the error, "" for none
}

var textCases = []textCase{
	// Line endings.
	{name: "newlines", spec: textSpec(2, 0), in: "1\tx\n2\ty\n",
		rows: []row{k("1", "1\tx\n"), k("2", "2\ty\n")}},
	{name: "last line without newline", spec: textSpec(2, 0), in: "1\tx\n2\ty",
		rows: []row{k("1", "1\tx\n"), k("2", "2\ty")}},
	{name: "crlf", spec: textSpec(2, 1), in: "1\tx\r\n2\ty\r\n",
		rows: []row{k("x", "1\tx\r\n"), k("y", "2\ty\r\n")}},
	{name: "cr", spec: textSpec(2, 0), in: "1\tx\r2\ty\r",
		rows: []row{k("1", "1\tx\r"), k("2", "2\ty\r")}},
	{name: "cr at end of data", spec: textSpec(2, 1), in: "1\tx\r",
		rows: []row{k("x", "1\tx\r")}},
	{name: "cr line then newline", spec: textSpec(2, 0), in: "1\tx\r2\ty\n",
		rows: []row{k("1", "1\tx\r")},
		err:  "22P04 literal newline found in data | COPY t, line 2"},
	{name: "newline line then cr", spec: textSpec(2, 0), in: "1\tx\n2\ty\r",
		rows: []row{k("1", "1\tx\n")},
		err:  "22P04 literal carriage return found in data | COPY t, line 2"},
	{name: "crlf line then newline", spec: textSpec(2, 0), in: "1\tx\r\n2\ty\n",
		rows: []row{k("1", "1\tx\r\n")},
		err:  "22P04 literal newline found in data | COPY t, line 2"},
	{name: "crlf line then cr in data", spec: textSpec(2, 0), in: "1\tx\r\n2\ty\rz\r\n",
		rows: []row{k("1", "1\tx\r\n")},
		err:  "22P04 literal carriage return found in data | COPY t, line 2"},
	{name: "crlf line then cr at end", spec: textSpec(2, 0), in: "1\tx\r\n2\ty\r",
		rows: []row{k("1", "1\tx\r\n")},
		err:  "22P04 literal carriage return found in data | COPY t, line 2"},
	{name: "lone cr line", spec: textSpec(1, 0), in: "\r",
		rows: []row{k("", "\r")}},
	{name: "empty line", spec: textSpec(1, 0), in: "\n",
		rows: []row{k("", "\n")}},
	{name: "empty input", spec: textSpec(2, 0), in: ""},

	// Escapes.
	{name: "escaped newline is data", spec: textSpec(2, 1), in: "1\tx\\\ny\n",
		rows: []row{k("x\ny", "1\tx\\\ny\n")}},
	{name: "escaped cr on first line", spec: textSpec(2, 1), in: "1\tx\\\r\n2\ty\n",
		rows: []row{k("x\r", "1\tx\\\r\n"), k("y", "2\ty\n")}},
	{name: "escaped cr before crlf", spec: textSpec(2, 0), in: "1\tx\r\n2\ty\\\r\n",
		rows: []row{k("1", "1\tx\r\n")},
		err:  "22P04 literal newline found in data | COPY t, line 2"},
	{name: "escapes", spec: textSpec(2, 0), in: `\101\x41\x4g\xg\N\\\b\f\n\r\t\v\q` + "\t\\N\n",
		rows: []row{k("AA\x04gxgN\\\b\f\n\r\t\vq", `\101\x41\x4g\xg\N\\\b\f\n\r\t\v\q`+"\t\\N\n")}},
	{name: "octal overflow and short forms", spec: textSpec(1, 0), in: `\777\1\12x\1009` + "\n",
		rows: []row{k("\xff\x01\nx@9", `\777\1\12x\1009`+"\n")}},
	{name: "escaped delimiter", spec: textSpec(2, 1), in: "a\\\tb\tc\\\td\n",
		rows: []row{k("c\td", "a\\\tb\tc\\\td\n")}},
	{name: "null", spec: textSpec(2, 1), in: "\\N\t\\N\n",
		rows: []row{n("\\N\t\\N\n")}},
	{name: "null is matched before de-escaping", spec: textSpec(2, 0), in: "\\\\N\t\\x4e\n",
		rows: []row{k("\\N", "\\\\N\t\\x4e\n")}},
	{name: "trailing backslash at end of data", spec: textSpec(2, 1), in: "1\tx\\",
		rows: []row{k("x", "1\tx\\")}},
	{name: "backslash alone at end of data", spec: textSpec(2, 1), in: "1\tx\n2\t\\",
		rows: []row{k("x", "1\tx\n"), k("", "2\t\\")}},
	{name: "escaped backslash then dot", spec: textSpec(2, 0), in: "a\\\\.\tb\n",
		rows: []row{k("a\\.", "a\\\\.\tb\n")}},
	{name: "hex digit that is the delimiter", spec: withDelim(textSpec(2, 0), 'A'), in: "\\xAA1A2\n",
		rows: []row{k("\xaa1", "\\xAA1A2\n")}},

	// End marker.
	{name: "end marker", spec: textSpec(2, 0), in: "1\tx\n\\.\n2\ty\n",
		rows: []row{k("1", "1\tx\n")}},
	{name: "end marker after data on its line", spec: textSpec(2, 0), in: "1\tx\n2\ty\\.\n3\tz\n",
		rows: []row{k("1", "1\tx\n"), k("2", "2\ty")}},
	{name: "end marker without newline", spec: textSpec(2, 0), in: "1\tx\n\\.",
		rows: []row{k("1", "1\tx\n")},
		err:  "22P04 end-of-copy marker corrupt | COPY t, line 2"},
	{name: "data after end marker is ignored", spec: textSpec(2, 0), in: "1\tx\n\\.\ngarbage\x00\r\n",
		rows: []row{k("1", "1\tx\n")}},
	{name: "end marker corrupt", spec: textSpec(2, 0), in: "1\tx\n\\.x\n",
		rows: []row{k("1", "1\tx\n")},
		err:  "22P04 end-of-copy marker corrupt | COPY t, line 2"},
	{name: "end marker newline after crlf", spec: textSpec(2, 0), in: "1\tx\r\n\\.\n",
		rows: []row{k("1", "1\tx\r\n")},
		err:  "22P04 end-of-copy marker does not match previous newline style | COPY t, line 2"},
	{name: "end marker crlf", spec: textSpec(2, 0), in: "1\tx\r\n\\.\r\n",
		rows: []row{k("1", "1\tx\r\n")}},
	{name: "end marker cr cr after crlf", spec: textSpec(2, 0), in: "1\tx\r\n\\.\r\r",
		rows: []row{k("1", "1\tx\r\n")},
		err:  "22P04 end-of-copy marker does not match previous newline style | COPY t, line 2"},
	{name: "end marker crlf at end of data", spec: textSpec(2, 0), in: "1\tx\r\n\\.\r",
		rows: []row{k("1", "1\tx\r\n")},
		err:  "22P04 end-of-copy marker corrupt | COPY t, line 2"},
	{name: "end marker cr", spec: textSpec(2, 0), in: "1\tx\r\\.\r",
		rows: []row{k("1", "1\tx\r")}},
	{name: "end marker newline after cr", spec: textSpec(2, 0), in: "1\tx\r\\.\n",
		rows: []row{k("1", "1\tx\r")},
		err:  "22P04 end-of-copy marker does not match previous newline style | COPY t, line 2"},
	{name: "end marker on first line", spec: textSpec(2, 0), in: "\\.\r\n1\tx\n"},

	// Field count.
	{name: "extra data", spec: textSpec(2, 0), in: "1\tx\tz\n",
		err: "22P04 extra data after last expected column | COPY t, line 1: \"1\tx\tz\""},
	{name: "missing data", spec: textSpec(2, 0), in: "1\n",
		err: "22P04 missing data for column \"#2\" | COPY t, line 1: \"1\""},
	{name: "missing data on empty line", spec: textSpec(2, 0), in: "1\tx\n\n",
		rows: []row{k("1", "1\tx\n")},
		err:  "22P04 missing data for column \"#2\" | COPY t, line 2: \"\""},
	{name: "missing key", spec: textSpec(3, 2), in: "1\tx\n",
		err: "22P04 missing data for column \"#3\" | COPY t, line 1: \"1\tx\""},
	{name: "key error before missing data", spec: textSpec(3, 0), in: "route-error\tx\n",
		err: "22P02 invalid input syntax for type bigint: \"route-error\" | COPY t, line 1, column #1: \"route-error\""},
	{name: "extra data before key error", spec: textSpec(1, 0), in: "route-error\tx\n",
		err: "22P04 extra data after last expected column | COPY t, line 1: \"route-error\tx\""},
	{name: "long line is shortened in context", spec: textSpec(2, 0), in: "1\t" + strings.Repeat("x", 150) + "\t3\n",
		err: "22P04 extra data after last expected column | COPY t, line 1: \"1\t" + strings.Repeat("x", 98) + "...\""},

	// NUL bytes.
	{name: "nul byte", spec: textSpec(2, 0), in: "1\tx\n2\ty\x00\n",
		rows: []row{k("1", "1\tx\n")},
		err:  "22021 invalid byte sequence for encoding \"UTF8\": 0x00 | COPY t, line 2"},
	{name: "nul escape before field count", spec: textSpec(1, 0), in: "\\0\"\t\t\n",
		err: "22021 invalid byte sequence for encoding \"UTF8\": 0x00 | COPY t, line 1: \"\\0\"\t\t\""},
	{name: "nul escape in another field", spec: textSpec(3, 0), in: "1\tx\\x00\n",
		err: "22021 invalid byte sequence for encoding \"UTF8\": 0x00 | COPY t, line 1: \"1\tx\\x00\""},
	{name: "nul escape after extra data", spec: textSpec(1, 0), in: "1\tx\\000\n",
		err: "22021 invalid byte sequence for encoding \"UTF8\": 0x00 | COPY t, line 1: \"1\tx\\000\""},
	{name: "nul byte after backslash", spec: textSpec(2, 0), in: "1\t\\\x00\n",
		err: "22021 invalid byte sequence for encoding \"UTF8\": 0x00 | COPY t, line 1"},
	{name: "nul byte after cr", spec: textSpec(2, 0), in: "1\tx\r\x00",
		err: "22021 invalid byte sequence for encoding \"UTF8\": 0x00 | COPY t, line 1"},

	// Header.
	{name: "header", spec: withHeader(textSpec(2, 0)), in: "a\tb\n1\tx\n",
		header: "a\tb\n", rows: []row{k("1", "1\tx\n")}},
	{name: "header ended by end marker", spec: withHeader(textSpec(2, 0)), in: "a\\.\n1\tx\n",
		header: "a"},
	{name: "header only, no newline", spec: withHeader(textSpec(2, 0)), in: "a\tb",
		header: "a\tb"},
	{name: "header may have any fields", spec: withHeader(textSpec(2, 0)), in: "a\\\n\tb\tc\r\n1\tx\r\n",
		header: "a\\\n\tb\tc\r\n", rows: []row{k("1", "1\tx\r\n")}},
	{name: "header counts as a line", spec: withHeader(textSpec(2, 0)), in: "a\tb\n1\n",
		header: "a\tb\n", err: "22P04 missing data for column \"#2\" | COPY t, line 2: \"1\""},

	// CSV.
	{name: "csv quotes", spec: csvSpec(2, 1), in: "1,x\n\"2\",\"y\"\"z\"\n",
		rows: []row{k("x", "1,x\n"), k("y\"z", "\"2\",\"y\"\"z\"\n")}},
	{name: "csv quoted newline", spec: csvSpec(2, 1), in: "1,\"a\nb\"\n2,y\n",
		rows: []row{k("a\nb", "1,\"a\nb\"\n"), k("y", "2,y\n")}},
	{name: "csv quoted crlf", spec: csvSpec(2, 1), in: "1,\"a\r\nb\"\r\n2,y\r\n",
		rows: []row{k("a\r\nb", "1,\"a\r\nb\"\r\n"), k("y", "2,y\r\n")}},
	{name: "csv unquoted empty is null", spec: csvSpec(2, 0), in: ",\"\"\n",
		rows: []row{n(",\"\"\n")}},
	{name: "csv quoted empty is not null", spec: csvSpec(2, 1), in: ",\"\"\n",
		rows: []row{k("", ",\"\"\n")}},
	{name: "csv empty line is one null", spec: csvSpec(1, 0), in: "\n",
		rows: []row{n("\n")}},
	{name: "csv quotes inside a field", spec: csvSpec(2, 0), in: "a\"b,c\"d,e\n",
		rows: []row{k("ab,cd", "a\"b,c\"d,e\n")}},
	{name: "csv backslash n is data", spec: csvSpec(2, 1), in: "\"\\N\",\\N\n",
		rows: []row{k("\\N", "\"\\N\",\\N\n")}},
	{name: "csv backslash at line start", spec: csvSpec(2, 0), in: "\\a,b\n",
		rows: []row{k("\\a", "\\a,b\n")}},
	{name: "csv other delimiter", spec: withDelim(csvSpec(3, 2), '|'), in: "1|\"a|b\"|c,d\n",
		rows: []row{k("c,d", "1|\"a|b\"|c,d\n")}},
	{name: "csv end marker", spec: csvSpec(2, 0), in: "1,x\n\\.\n2,y\n",
		rows: []row{k("1", "1,x\n")}},
	{name: "csv end marker crlf", spec: csvSpec(2, 0), in: "1,x\r\n\\.\r\n2,y\r\n",
		rows: []row{k("1", "1,x\r\n")}},
	{name: "csv end marker on first line", spec: csvSpec(2, 0), in: "\\.\n1,x\n"},
	{name: "csv end marker cr on first line", spec: csvSpec(2, 0), in: "\\.\r1,x\n"},
	{name: "csv backslash dot with more is data", spec: csvSpec(2, 0), in: "1,x\n\\.a\n",
		rows: []row{k("1", "1,x\n")},
		err:  "22P04 missing data for column \"#2\" | COPY t, line 2: \"\\.a\""},
	{name: "csv backslash dot with more is data, crlf", spec: csvSpec(2, 0), in: "1,x\r\n\\.a,b\r\n",
		rows: []row{k("1", "1,x\r\n"), k("\\.a", "\\.a,b\r\n")}},
	{name: "csv backslash dot at end of data is data", spec: csvSpec(1, 0), in: "1\n\\.",
		rows: []row{k("1", "1\n"), k("\\.", "\\.")}},
	{name: "csv backslash at end of data is data", spec: csvSpec(2, 0), in: "1,x\n\\",
		rows: []row{k("1", "1,x\n")},
		err:  "22P04 missing data for column \"#2\" | COPY t, line 2: \"\\\""},
	{name: "csv backslash dot not at line start", spec: csvSpec(2, 1), in: "1,\\.\n",
		rows: []row{k("\\.", "1,\\.\n")}},
	{name: "csv end marker newline after crlf", spec: csvSpec(2, 0), in: "1,x\r\n\\.\n",
		rows: []row{k("1", "1,x\r\n")},
		err:  "22P04 unquoted newline found in data | COPY t, line 2"},
	{name: "csv end marker newline after cr", spec: csvSpec(2, 0), in: "1,x\r\\.\n",
		rows: []row{k("1", "1,x\r")},
		err:  "22P04 end-of-copy marker does not match previous newline style | COPY t, line 2"},
	{name: "csv end marker cr without newline after crlf", spec: csvSpec(2, 0), in: "1,x\r\n\\.\rx",
		rows: []row{k("1", "1,x\r\n")},
		err:  "22P04 unquoted carriage return found in data | COPY t, line 2"},
	{name: "csv end marker cr at end after crlf", spec: csvSpec(2, 0), in: "1,x\r\n\\.\r",
		rows: []row{k("1", "1,x\r\n")},
		err:  "22P04 unquoted carriage return found in data | COPY t, line 2"},
	{name: "csv unterminated quote", spec: csvSpec(2, 0), in: "1,\"x\n2,y\n",
		err: "22P04 unterminated CSV quoted field | COPY t, line 1: \"1,\"x\n2,y\n\""},
	{name: "csv unterminated quote counts lines", spec: csvSpec(2, 0), in: "1,x\n1,\"a\nb\nc\n",
		rows: []row{k("1", "1,x\n")},
		err:  "22P04 unterminated CSV quoted field | COPY t, line 5: \"1,\"a\nb\nc\n\""},
	{name: "csv first line's quoted newlines are not counted", spec: csvSpec(2, 0), in: "1,\"a\nb\nc\"\n2,y,z\n",
		rows: []row{k("1", "1,\"a\nb\nc\"\n")},
		err:  "22P04 extra data after last expected column | COPY t, line 2: \"2,y,z\""},
	{name: "csv quoted cr counted before the line ending is known", spec: csvSpec(2, 0), in: "1,\"a\rb\"\r\n2,y,z\r\n",
		rows: []row{k("1", "1,\"a\rb\"\r\n")},
		err:  "22P04 extra data after last expected column | COPY t, line 3: \"2,y,z\""},
	{name: "csv unquoted cr", spec: csvSpec(2, 0), in: "1,x\n2,y\rz\n",
		rows: []row{k("1", "1,x\n")},
		err:  "22P04 unquoted carriage return found in data | COPY t, line 2"},
	{name: "csv extra data", spec: csvSpec(2, 0), in: "1,x,z\n",
		err: "22P04 extra data after last expected column | COPY t, line 1: \"1,x,z\""},
	{name: "csv nul after quoted cr", spec: csvSpec(2, 0), in: "\"\r\x00\"\n",
		err: "22021 invalid byte sequence for encoding \"UTF8\": 0x00 | COPY t, line 1"},
	{name: "csv nul after cr line end", spec: csvSpec(2, 0), in: "a,\r\r\x00",
		rows: []row{k("a", "a,\r")},
		err:  "22021 invalid byte sequence for encoding \"UTF8\": 0x00 | COPY t, line 2"},
	{name: "csv nul after backslash", spec: csvSpec(2, 1), in: "1,\\\x00\n",
		err: "22021 invalid byte sequence for encoding \"UTF8\": 0x00 | COPY t, line 1"},
	{name: "csv nul in quotes", spec: csvSpec(2, 0), in: "1,\"\x00\"\n",
		err: "22021 invalid byte sequence for encoding \"UTF8\": 0x00 | COPY t, line 1"},
	{name: "csv header", spec: withHeader(csvSpec(2, 0)), in: "a,b\n1,x\n",
		header: "a,b\n", rows: []row{k("1", "1,x\n")}},
	{name: "csv header spanning lines", spec: withHeader(csvSpec(2, 0)), in: "a,\"b\nc\"\n1,x\n",
		header: "a,\"b\nc\"\n", rows: []row{k("1", "1,x\n")}},
	{name: "csv header with extra columns", spec: withHeader(csvSpec(2, 0)), in: "a,b,c,d\n1,x\n",
		header: "a,b,c,d\n", rows: []row{k("1", "1,x\n")}},
	{name: "csv header only", spec: withHeader(csvSpec(2, 0)), in: "a,b",
		header: "a,b"},
	{name: "csv empty with header", spec: withHeader(csvSpec(2, 0)), in: ""},
}

// TestText checks every text and csv case with the input cut at every
// byte boundary (and more): the result must not depend on how the data
// was split into CopyData messages.
func TestText(t *testing.T) {
	for _, tc := range textCases {
		t.Run(tc.name, func(t *testing.T) {
			want := outcome{rows: tc.rows, header: tc.header, hdrOK: true}
			for _, chunks := range chunkings(tc.in) {
				got := split(t, tc.spec, chunks)
				if !slices.Equal(got.rows, want.rows) || got.header != want.header || !got.hdrOK ||
					errString(got.err) != tc.err {
					t.Fatalf("chunks %s\ngot:\n%v\nwant:\n%v\nerr: %s", describe(chunks), got, want, tc.err)
				}
			}
		})
	}
}
