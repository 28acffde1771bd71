package metarpc

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgshard/pgshard/shardmap"
)

// The data check of ApplyMap: a map that gives a key interval to another
// shard is refused while the old owner still holds rows in it, unless the
// request says the rows are already on the new owner (no_data_check).

// reasonDataNotMoved is the ErrorInfo reason of a DataNotMovedError.
const reasonDataNotMoved = "DATA_NOT_MOVED"

// RowQuery is one count the data check asks for: the rows of Table (a
// map table name, schema-qualified) that match Where (a SQL condition,
// see shardmap.IntervalPredicate).
type RowQuery struct {
	Table string
	Where string
}

// MovedRows is an interval a refused map gives to another shard, and what
// its old owner holds in it.
type MovedRows struct {
	Distribution string `json:"distribution"`
	// Interval is the key interval as people read it: "[401, 501)", or
	// "hash [0, +inf)" for a hash distribution.
	Interval string `json:"interval"`
	From     string `json:"from"`
	// To is the new owner; "" when the distribution's key type or
	// strategy changes (every key is placed anew).
	To string `json:"to"`
	// Server is the old owner's primary, where the rows were counted.
	Server string `json:"server"`
	// Tables are the counts per table, in name order; empty when the
	// server could not be asked (Error).
	Tables []TableRows `json:"tables"`
	// Error says why the rows could not be counted; "" when they were.
	Error string `json:"error,omitempty"`
}

// TableRows is a table's row count in a moving interval.
type TableRows struct {
	Table string `json:"table"`
	Rows  int64  `json:"rows"`
}

// Rows is the total of the tables' counts.
func (m *MovedRows) Rows() int64 {
	var n int64
	for _, t := range m.Tables {
		n += t.Rows
	}
	return n
}

// String says it for people: "distribution users [401, 501) from s0 to
// s1: 100 rows on 127.0.0.1:5432 (public.orders 200, public.users 100)".
func (m *MovedRows) String() string {
	to := m.To
	if to == "" {
		to = "(placed anew: key type or strategy changes)"
	}
	s := fmt.Sprintf("distribution %s %s from %s to %s: ", m.Distribution, m.Interval, m.From, to)
	if m.Error != "" {
		return s + "cannot count its rows on " + m.Server + ": " + m.Error
	}
	parts := make([]string, 0, len(m.Tables))
	for _, t := range m.Tables {
		if t.Rows > 0 {
			parts = append(parts, t.Table+" "+strconv.FormatInt(t.Rows, 10))
		}
	}
	return s + fmt.Sprintf("%d rows on %s (%s)", m.Rows(), m.Server, strings.Join(parts, ", "))
}

// DataNotMovedError says that ApplyMap refused a map that gives key
// intervals to another shard while their old owner still holds rows in
// them (or could not be asked): the proxies would route those keys to a
// shard that does not have them. Nothing was applied;
// ApplyMapOptions.NoDataCheck applies it anyway. It matches
// ErrFailedPrecondition.
type DataNotMovedError struct {
	// Moves are the refused intervals: those with rows and those whose
	// rows could not be counted.
	Moves []MovedRows
}

// Error names every interval with its counts.
func (e *DataNotMovedError) Error() string {
	var b strings.Builder
	b.WriteString("the map gives rows to another shard, not applied:")
	for i, m := range e.Moves {
		if i > 0 {
			b.WriteString(";")
		}
		b.WriteString(" ")
		b.WriteString(m.String())
	}
	return b.String()
}

// Is matches ErrFailedPrecondition.
func (e *DataNotMovedError) Is(target error) bool { return target == ErrFailedPrecondition }

// GRPCStatus is the error's status: codes.FailedPrecondition, with an
// ErrorInfo (reason DATA_NOT_MOVED, metadata "moves": the moves as JSON)
// and a PreconditionFailure detail, a violation per interval (type
// "rows-on-old-owner" or "old-owner-unreachable"; subject
// "distribution interval").
func (e *DataNotMovedError) GRPCStatus() *status.Status {
	pf := &errdetails.PreconditionFailure{}
	for _, m := range e.Moves {
		typ := "rows-on-old-owner"
		if m.Error != "" {
			typ = "old-owner-unreachable"
		}
		pf.Violations = append(pf.Violations, &errdetails.PreconditionFailure_Violation{
			Type: typ, Subject: m.Distribution + " " + m.Interval, Description: m.String(),
		})
	}
	moves, _ := json.Marshal(e.Moves) // plain structs: cannot fail
	return withDetails(status.New(codes.FailedPrecondition, e.Error()),
		&errdetails.ErrorInfo{Reason: reasonDataNotMoved, Domain: errorDomain, Metadata: map[string]string{"moves": string(moves)}}, pf)
}

// dataNotMovedFrom decodes the moves of a DATA_NOT_MOVED status.
func dataNotMovedFrom(st *status.Status, info *errdetails.ErrorInfo) *DataNotMovedError {
	e := &DataNotMovedError{}
	if err := json.Unmarshal([]byte(info.GetMetadata()["moves"]), &e.Moves); err != nil || len(e.Moves) == 0 {
		e.Moves = []MovedRows{{Error: st.Message()}}
	}
	return e
}

// checkData counts the rows every interval that changes owner from cur
// to next holds on its old owner's primary, and returns a
// *DataNotMovedError when any interval has rows or could not be counted.
// It asks no server when no interval changes owner.
func checkData(ctx context.Context, cur, next *shardmap.Map, count func(ctx context.Context, server string, qs []RowQuery) ([]int64, error)) error {
	var refused []MovedRows
	for _, mv := range shardmap.DataMoves(cur, next) {
		r := MovedRows{Distribution: mv.Distribution, Interval: mv.Interval(), From: mv.From, To: mv.To, Tables: []TableRows{}}
		if len(mv.Tables) == 0 {
			continue // no table uses the distribution: nothing to strand
		}
		old := cur.Shard(mv.From)
		if old == nil {
			continue // only in an invalid map
		}
		r.Server = old.Primary.String()
		qs := make([]RowQuery, len(mv.Tables))
		for i, t := range mv.Tables {
			qs[i] = RowQuery{Table: t.Name, Where: mv.Predicate(t)}
		}
		counts, err := count(ctx, r.Server, qs)
		if err == nil && len(counts) != len(qs) {
			err = fmt.Errorf("got %d counts for %d tables", len(counts), len(qs))
		}
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			r.Error = err.Error()
			refused = append(refused, r)
			continue
		}
		for i, t := range mv.Tables {
			r.Tables = append(r.Tables, TableRows{Table: t.Name, Rows: counts[i]})
		}
		if r.Rows() > 0 {
			refused = append(refused, r)
		}
	}
	if len(refused) > 0 {
		return &DataNotMovedError{Moves: refused}
	}
	return nil
}
