// Package copysplit splits the data of COPY table (cols) FROM STDIN into
// one stream per shard, by the sharding key column, parsing the text, csv
// and binary formats exactly as PostgreSQL 15 does.
//
// The planner (router/plan) turns the COPY statement into a CopyIn plan
// whose CopySpec names the format, delimiter, header option, column count
// and the key's position. The proxy builds a Splitter from it, passes it
// every CopyData payload the client sends (Write) and closes it at
// CopyDone (Close). For each row the Splitter calls route with the key's
// decoded value and emit with the shard and the row's bytes exactly as the
// client sent them, so the proxy forwards rows without re-encoding.
// Each shard's stream is Header() + its rows + Trailer(): the binary
// signature or a HEADER line goes to every shard, the binary trailer ends
// every stream, and a text end marker (\.) is never forwarded.
//
// What follows PostgreSQL 15 (copyfromparse.c), messages and SQLSTATEs
// included:
//   - text: lines end at \n, \r\n or \r, detected on the first line and
//     then required; backslash escapes (\b \f \n \r \t \v, octal, \x hex,
//     any other byte taken literally, including an escaped newline), \N
//     for NULL; \. ends the data, and whatever precedes it on its line is
//     a last row; a last line without terminator is a row.
//   - csv: double-quoted fields with "" for a quote, spanning lines;
//     an unquoted empty field is NULL; \. alone on a line ends the data.
//   - HEADER (text and csv): the first line is the header.
//   - binary: signature, flags (critical bits refused), header extension,
//     tuples, optional trailer; nothing may follow the trailer.
//   - errors: field count ("extra data after last expected column",
//     "missing data for column"), line endings, end marker, NUL bytes and
//     binary structure, with the line number and quoted text PostgreSQL
//     puts in its CONTEXT (see Error).
//
// Not supported, because CopySpec does not carry them: NULL, QUOTE,
// ESCAPE, FORCE_NOT_NULL, FORCE_NULL and ENCODING options (the planner
// must refuse them), and client encodings whose characters can contain
// ASCII bytes (New refuses those given WithClientEncoding). Values are not
// checked beyond NUL bytes: a bad value, or text invalid in the encoding
// (including what an escape such as ÿ makes), is reported by the shard
// that gets the row, with that shard's line number.
//
// Write passes rows that lie inside one CopyData payload as slices of it,
// and buffers only rows that span payloads; rows and keys are valid only
// during the callback. The common case allocates nothing per row.
package copysplit
