package scatter

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/pgshard/pgshard/proxy/pool"
	"github.com/pgshard/pgshard/router/merge"
	"github.com/pgshard/pgshard/wire"
)

// scatterWriteResult builds the answer to a statement that returned no
// rows on any shard: the shards' row counts are summed ("UPDATE 7",
// "INSERT 0 7"); a tag without a count must be the same on every shard.
func scatterWriteResult(dst []byte, run *scatterRun, evs []scatterEvent) ([]byte, error) {
	empty := 0
	for _, ev := range evs {
		if ev.empty {
			empty++
		}
	}
	switch empty {
	case len(evs):
		return append(dst, 'I', 0, 0, 0, 4), nil
	case 0:
	default:
		return dst, wire.Errorf(wire.SQLStateFeatureNotSupported, "cross-shard query: the shards answered differently (empty query on some)")
	}
	prefix, hasCount := scatterTagPrefix(evs[0].tag)
	var total int64
	for i, ev := range evs {
		p, ok := scatterTagPrefix(ev.tag)
		if p != prefix || ok != hasCount || (!ok && ev.tag != evs[0].tag) {
			return dst, &wire.Error{Code: wire.SQLStateFeatureNotSupported,
				Message: "cross-shard query: the shards completed different commands",
				Detail:  fmt.Sprintf("Shard %s answered %q, shard %s answered %q.", run.shards[0].name, evs[0].tag, run.shards[i].name, ev.tag)}
		}
		if ok {
			n, _ := strconv.ParseInt(ev.tag[len(prefix)+1:], 10, 64)
			total += n
		}
	}
	if !hasCount {
		return scatterAppendTag(dst, evs[0].tag), nil
	}
	return scatterAppendTag(dst, prefix+" "+strconv.FormatInt(total, 10)), nil
}

// scatterTagPrefix splits a command tag with a row count ("UPDATE 3",
// "INSERT 0 3", "SELECT 3") into what precedes the count; false when the
// tag has no count.
func scatterTagPrefix(tag string) (string, bool) {
	i := strings.LastIndexByte(tag, ' ')
	if i <= 0 {
		return tag, false
	}
	if _, err := strconv.ParseUint(tag[i+1:], 10, 64); err != nil {
		return tag, false
	}
	return tag[:i], true
}

// scatterAppendTag appends a CommandComplete frame.
func scatterAppendTag(dst []byte, tag string) []byte {
	start := len(dst)
	dst = append(dst, 'C', 0, 0, 0, 0)
	dst = append(dst, tag...)
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}

// scatterMergeError turns an error of the merge into what the client
// gets: a shard's own error as is; a result the merger cannot combine
// exactly as 0A000 (54000 when it does not fit in memory).
func scatterMergeError(err error, shards []string) error {
	var we *wire.Error
	if errors.As(err, &we) {
		return we
	}
	code := wire.SQLStateFeatureNotSupported
	msg := err.Error()
	switch {
	case errors.Is(err, merge.ErrTooLarge):
		code = wire.SQLStateProgramLimitExceeded
		msg = "cross-shard query: the result is too large to merge in memory"
	case errors.Is(err, merge.ErrUnsupported):
		// UnsupportedError reads "cross-shard query: cannot ..." already.
	case errors.Is(err, merge.ErrDivisionByZero):
		code = wire.SQLStateDivisionByZero
		msg = "division by zero"
	case errors.Is(err, merge.ErrOutOfRange):
		// Where PostgreSQL itself fails: a combined sum that overflows.
		code = wire.SQLStateNumericValueOutOfRange
		msg = strings.TrimPrefix(msg, "merge: ")
	default:
		msg = "cross-shard query cannot be merged: " + strings.TrimPrefix(msg, "merge: ")
	}
	return &wire.Error{Code: code, Message: msg,
		Detail: "Shards in merge order (numbered from 0): " + strings.Join(shards, ", ") + ".", Err: err}
}

// Tx is a shard's backend with a transaction the proxy opened.
type Tx struct {
	Name string // the shard
	Conn *pool.Conn
}

// CommitFunc commits the transactions of a statement over several shards
// as one (two-phase commit), else rolls them all back and returns the
// client's error.
type CommitFunc func(ctx context.Context, txs []Tx) error

// EndTransactions commits (commit true) or rolls back the transactions a
// statement over several shards left open. Commits go shard by shard:
// when one fails, the shards before it have committed (that cannot be
// undone, and the error says so) and the rest are rolled back.
func EndTransactions(ctx context.Context, txs []Tx, commit bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ReplyTimeout)
	defer cancel()
	var err error
	committed := 0
	for _, tx := range txs {
		end := "ROLLBACK"
		if commit && err == nil {
			end = "COMMIT"
		}
		xerr := tx.Conn.Exec(ctx, end)
		if xerr == nil {
			if end == "COMMIT" {
				committed++
			}
			continue
		}
		// (An I/O failure has marked the connection broken; a server
		// error ended the transaction.)
		if end == "COMMIT" {
			c := serverCode(xerr)
			if c == "" {
				c = wire.SQLStateConnectionFailure
			}
			err = &wire.Error{Code: c, Err: xerr,
				Message: fmt.Sprintf("shard %s: commit failed after %d of %d shards committed: %v", tx.Name, committed, len(txs), xerr)}
		}
	}
	return err
}

// scatterFrames builds what shard name is sent for req: one Query, or the
// extended-protocol sequence; with req.Atomic, after a BEGIN.
func scatterFrames(req *Request, name string) []byte {
	sql := req.SQL
	if q, ok := req.PerShardSQL[name]; ok {
		sql = q
	}
	var b []byte
	if req.Atomic {
		b = wire.AppendString(b, 'Q', "BEGIN")
	}
	if req.Ext == nil {
		return wire.AppendString(b, 'Q', sql)
	}
	return req.Ext.AppendFrames(b, sql)
}

// scatterOrdered answers a statement whose rows go back in a given order
// (RowOrder): every shard's rows are collected, then placed.
func scatterOrdered(ctx context.Context, req *Request, run *scatterRun, desc []byte) ([]byte, error) {
	total := 0
	for _, rows := range req.RowOrder {
		total += len(rows)
	}
	placed := make([][]byte, total)
	var tag string
	for i, h := range run.shards {
		order := req.RowOrder[req.Shards[i]]
		src := scatterSource{ctx: ctx, run: run, h: h}
		for n := 0; ; n++ {
			row, err := src.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return req.Dst, scatterMergeError(err, req.Shards)
			}
			if n >= len(order) || order[n] >= total || placed[order[n]] != nil {
				return req.Dst, h.errorf(wire.SQLStateFeatureNotSupported, "cross-shard statement returned more rows than it was given")
			}
			placed[order[n]] = bytes.Clone(row)
		}
		if tag == "" {
			tag = src.tag
		}
	}
	out := req.Dst
	if !req.NoDescription {
		out = append(out, desc...)
	}
	n := 0
	for _, row := range placed {
		if row != nil {
			out = append(out, row...)
			n++
		}
	}
	verb, ok := scatterTagPrefix(tag)
	if !ok {
		verb = "SELECT"
	}
	return scatterAppendTag(out, verb+" "+strconv.Itoa(n)), nil
}

// scatterCopyOut concatenates the shards' COPY ... TO STDOUT data: one
// CopyOutResponse, every shard's CopyData in shard order (a CSV header
// only from the first shard; binary: the file header only from the first
// shard and the trailer only from the last), CopyDone and the summed
// COPY count.
func scatterCopyOut(ctx context.Context, req *Request, run *scatterRun, descs [][]byte) ([]byte, error) {
	for i, d := range descs[1:] {
		if !bytes.Equal(d, descs[0]) {
			return req.Dst, &wire.Error{Code: wire.SQLStateFeatureNotSupported,
				Message: "cross-shard COPY: the shards answered with different column formats",
				Detail:  fmt.Sprintf("Shard %s differs from shard %s.", req.Shards[i+1], req.Shards[0])}
		}
	}
	binaryFormat := len(descs[0]) > wire.HeaderLen && descs[0][wire.HeaderLen] == 1
	out := append(req.Dst, descs[0]...)
	emit := func(data []byte) error {
		if len(data) == 0 {
			return nil
		}
		out = append(out, 'd', 0, 0, 0, 0)
		binary.BigEndian.PutUint32(out[len(out)-4:], uint32(len(data)+4))
		out = append(out, data...)
		if req.Flush != nil && len(out) >= scatterFlushBytes {
			if err := req.Flush(out); err != nil {
				return err
			}
			out = out[:0]
		}
		return nil
	}
	var total int64
	for i, h := range run.shards {
		src := scatterSource{ctx: ctx, run: run, h: h}
		first, last := i == 0, i == len(run.shards)-1
		var held []byte // binary: the previous message, which may end with the trailer
		for n := 0; ; n++ {
			frame, err := src.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return out, scatterMergeError(err, req.Shards)
			}
			data := frame[wire.HeaderLen:]
			switch {
			case binaryFormat:
				if n == 0 && !first {
					hl, ok := copyBinaryHeaderLen(data)
					if !ok {
						return out, h.errorf(wire.SQLStateFeatureNotSupported, "cross-shard COPY: the shard's binary data does not start with a COPY file header")
					}
					data = data[hl:]
				}
				if err := emit(held); err != nil {
					return out, err
				}
				held = append(held[:0], data...)
				continue
			case n == 0 && !first && req.CopyHeader:
				continue // the header line, sent once
			}
			if err := emit(data); err != nil {
				return out, err
			}
		}
		if binaryFormat {
			if !last {
				if len(held) < 2 {
					return out, h.errorf(wire.SQLStateFeatureNotSupported, "cross-shard COPY: the shard's binary data does not end with a COPY file trailer")
				}
				held = held[:len(held)-2]
			}
			if err := emit(held); err != nil {
				return out, err
			}
		}
		if p, ok := scatterTagPrefix(src.tag); ok && p == "COPY" {
			n, _ := strconv.ParseInt(src.tag[len(p)+1:], 10, 64)
			total += n
		}
	}
	out = append(out, 'c', 0, 0, 0, 4)
	return scatterAppendTag(out, "COPY "+strconv.FormatInt(total, 10)), nil
}

// copyBinaryHeaderLen returns the length of the binary COPY file header
// at the start of b: signature, flags, extension length and extension.
func copyBinaryHeaderLen(b []byte) (int, bool) {
	const fixed = 11 + 4 + 4
	if len(b) < fixed || string(b[:11]) != "PGCOPY\n\xff\r\n\x00" {
		return 0, false
	}
	n := fixed + int(binary.BigEndian.Uint32(b[15:]))
	if n < fixed || n > len(b) {
		return 0, false
	}
	return n, true
}

// serverCode is the SQLSTATE of a server's error, "" for another error.
func serverCode(err error) string {
	var se *pool.ServerError
	if errors.As(err, &se) {
		return se.Code
	}
	return ""
}

// cstring reads a NUL-terminated string.
func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
