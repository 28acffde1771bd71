package reshard

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/replication/health"
	"github.com/pgshard/pgshard/shardmap"
)

// VerifyOptions tune [Engine.Verify].
type VerifyOptions struct {
	// MaxDiffKeys bounds the differing keys reported per table; 0 means 20.
	MaxDiffKeys int
	// Rounds is how many times the aggregates are compared before Verify
	// looks for differing keys, when the source is not fenced (writes in
	// flight make a round differ); 0 means 3. A fenced source needs one.
	Rounds int
	// CaughtUp says that the source is fenced and the target has applied
	// the source's WAL up to the fence ([Engine.WaitCaughtUp] returned
	// after [Engine.Fence]): neither side's interval rows can change, so
	// both are read at the same time, without another WAL marker. Verify
	// inside a cutover's hold sets it (the hold is the pause the clients
	// of the interval see).
	CaughtUp bool
	// CountOnly compares the row counts only, not the checksums: the
	// check inside the hold of a large interval, whose full comparison ran
	// before the hold (see ControllerConfig.HoldVerifyRows).
	CountOnly bool
}

// TableCheck is the comparison of one table's interval rows.
type TableCheck struct {
	Table                  string
	SourceRows, TargetRows int64
	SourceChecksum         string // sum of the rows' 64-bit hashes, a decimal
	TargetChecksum         string
	Equal                  bool
	DiffKeys               []string // key values (as text) whose rows differ, at most MaxDiffKeys
	MoreDiffKeys           bool     // more keys differ than DiffKeys lists
}

// VerifyResult is what Verify found.
type VerifyResult struct {
	Tables []TableCheck
	// Equal reports whether every table's rows are equal on both sides.
	Equal bool
	// Fenced reports whether the source was fenced during the comparison:
	// then the interval could not change and the comparison is exact.
	Fenced bool
	// LSN is the source position the target had applied before it was
	// read in the last round.
	LSN health.LSN
	// CountOnly reports that only row counts were compared (see
	// VerifyOptions.CountOnly).
	CountOnly bool
	// Reread reports that a table's aggregates differed in every round
	// (writes in flight) and it was found equal key by key: every key's
	// aggregates were compared (the first pass was not cut at its limit)
	// and the keys that differed were equal when re-read.
	Reread bool
}

// Rows is the number of the interval's rows the source had, over all
// tables.
func (r VerifyResult) Rows() int64 {
	var n int64
	for _, t := range r.Tables {
		n += t.SourceRows
	}
	return n
}

// rowHash is a 64-bit hash of a whole row (its text form, which the
// session settings make identical on both servers): the first 16 hex
// digits of md5 as a signed bigint.
const rowHash = "('x' || substr(md5(r::text), 1, 16))::bit(64)::int8"

// Verify compares, per table, the row count and an order-independent
// checksum (the sum of per-row 64-bit hashes) of the interval's rows on
// the source and on the target, and on a mismatch lists the differing
// key values (bounded by MaxDiffKeys).
//
// Consistency: the source is read in one REPEATABLE READ snapshot (all
// tables at one point); then a marker is committed into the source's WAL
// at position L (see WaitCaughtUp), after every commit the snapshot saw;
// Verify
// then waits until the target has applied up to L and reads it, also in
// one snapshot. When the source is fenced (after [Engine.Fence]) the
// interval cannot change, so both reads see the same rows and one round is
// exact: this is the verification that counts before cutover. Without a
// fence, writes committed after the source's snapshot may reach the target
// before it is read, so a round can differ for rows in flight: Verify
// repeats the round (Rounds) and, if the tables still differ, lists the
// keys whose per-key aggregates differ, then re-reads exactly those keys
// on both sides after another catch-up and reports only the keys that
// still differ. A key listed then is wrong on the target unless it was
// written again in that instant; a fenced verify removes that doubt.
func (e *Engine) Verify(ctx context.Context, opts VerifyOptions) (VerifyResult, error) {
	if opts.MaxDiffKeys <= 0 {
		opts.MaxDiffKeys = 20
	}
	if opts.Rounds <= 0 {
		opts.Rounds = 3
	}
	fenced, err := e.Fenced(ctx)
	if err != nil {
		return VerifyResult{}, err
	}
	res := VerifyResult{Fenced: fenced, CountOnly: opts.CountOnly}
	rounds := opts.Rounds
	if fenced {
		rounds = 1
	}
	for range rounds {
		if fenced && opts.CaughtUp {
			res.Tables, err = e.compareStill(ctx, opts.CountOnly)
		} else {
			res.Tables, res.LSN, err = e.compareAggregates(ctx, opts.CountOnly)
		}
		if err != nil {
			return VerifyResult{}, fmt.Errorf("reshard: verify %s: %w", e.cfg.Move, err)
		}
		res.Equal = true
		for _, tc := range res.Tables {
			res.Equal = res.Equal && tc.Equal
		}
		if res.Equal {
			return res, nil
		}
	}
	for i := range res.Tables {
		tc := &res.Tables[i]
		if tc.Equal {
			continue
		}
		t := e.cfg.Move.Tables[i]
		// The first pass walks every key's aggregates anyway (both sides
		// are read in full); its limit only bounds the keys re-read, so it
		// is large: under steady writes hundreds of keys are in flight.
		limit := max(10*opts.MaxDiffKeys, firstPassKeys)
		keys, err := e.diffKeys(ctx, t, nil, limit)
		// A first pass that stopped at its limit may not have compared
		// every key: the table cannot be called equal from re-reads then.
		complete := len(keys) < limit
		if err == nil && !fenced && len(keys) > 0 {
			keys, err = e.diffKeys(ctx, t, keys, len(keys))
		}
		if err != nil {
			return VerifyResult{}, fmt.Errorf("reshard: verify %s: differing keys of %s: %w", e.cfg.Move, t.Name, err)
		}
		if len(keys) > opts.MaxDiffKeys {
			keys, tc.MoreDiffKeys = keys[:opts.MaxDiffKeys], true
		}
		tc.DiffKeys = keys
		// Without a fence, aggregates that differed in every round but
		// no key that still differs once re-read were writes in flight:
		// the table is equal as far as the comparison can tell.
		if !fenced && len(keys) == 0 && complete {
			tc.Equal, res.Reread = true, true
		}
	}
	res.Equal = true
	for _, tc := range res.Tables {
		res.Equal = res.Equal && tc.Equal
	}
	return res, nil
}

// firstPassKeys bounds the differing keys Verify's first per-key pass
// collects (to re-read them) when the source is not fenced.
const firstPassKeys = 100_000

// aggQuery is the count and checksum of t's interval rows (the count and
// an empty checksum with countOnly).
func (e *Engine) aggQuery(t Table, countOnly bool) string {
	sum := "coalesce(sum(" + rowHash + "::numeric), 0)::text"
	if countOnly {
		sum = "''"
	}
	return "SELECT count(*), " + sum + " FROM " + qualified(t.Name) + " r WHERE " + e.cfg.Move.filterOn("r."+quoteIdent(t.KeyColumn))
}

// readAggregates reads every table's aggregates on side s in one
// snapshot, into the source's or the target's fields of checks.
func (e *Engine) readAggregates(ctx context.Context, s side, checks []TableCheck, countOnly bool) error {
	return e.withConn(ctx, s, func(conn *pgx.Conn) error {
		return pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			for i, t := range e.cfg.Move.Tables {
				// Each side writes only its own fields (compareStill reads
				// both sides at once); the source's also names the table.
				c := &checks[i]
				rows, sum := &c.TargetRows, &c.TargetChecksum
				if s.role == e.source().role {
					c.Table, rows, sum = t.Name, &c.SourceRows, &c.SourceChecksum
				}
				if err := tx.QueryRow(ctx, e.aggQuery(t, countOnly)).Scan(rows, sum); err != nil {
					return fmt.Errorf("%s: checksum of %s: %w", s, t.Name, err)
				}
			}
			return nil
		})
	})
}

// compare sets each check's Equal.
func compare(checks []TableCheck) []TableCheck {
	for i := range checks {
		c := &checks[i]
		c.Equal = c.SourceRows == c.TargetRows && c.SourceChecksum == c.TargetChecksum
	}
	return checks
}

// compareAggregates runs one round: the source in one snapshot, then the
// target in one snapshot once it has applied the source's position.
func (e *Engine) compareAggregates(ctx context.Context, countOnly bool) ([]TableCheck, health.LSN, error) {
	checks := make([]TableCheck, len(e.cfg.Move.Tables))
	if err := e.readAggregates(ctx, e.source(), checks, countOnly); err != nil {
		return nil, 0, err
	}
	// Every commit the snapshot saw lies before the marker.
	lsn, err := e.markLSN(ctx)
	if err != nil {
		return nil, 0, err
	}
	if err := e.waitApplied(ctx, lsn, false); err != nil {
		return nil, 0, err
	}
	if err := e.readAggregates(ctx, e.target(), checks, countOnly); err != nil {
		return nil, 0, err
	}
	return compare(checks), lsn, nil
}

// compareStill runs one round when neither side's interval rows can
// change (the source fenced, the target caught up): both sides are read
// at the same time.
func (e *Engine) compareStill(ctx context.Context, countOnly bool) ([]TableCheck, error) {
	checks := make([]TableCheck, len(e.cfg.Move.Tables))
	done := make(chan error, 1)
	go func() { done <- e.readAggregates(ctx, e.target(), checks, countOnly) }()
	err := e.readAggregates(ctx, e.source(), checks, countOnly)
	if terr := <-done; err == nil {
		err = terr
	}
	if err != nil {
		return nil, err
	}
	return compare(checks), nil
}

// keyAgg is the count and hash sum of the rows of one key value.
type keyAgg struct {
	key   string
	count int64
	sum   string
}

// perKeyQuery lists the per-key aggregates of t's interval rows ordered
// by key (only of keys when keys is not nil).
func (e *Engine) perKeyQuery(t Table, keys []string) (string, []any) {
	k := "r." + quoteIdent(t.KeyColumn)
	order := k
	if e.cfg.Move.KeyType == shardmap.KeyText {
		order = k + `::text COLLATE "C"`
	}
	q := "SELECT " + k + "::text, count(*), sum(" + rowHash + "::numeric)::text FROM " + qualified(t.Name) + " r WHERE " + e.cfg.Move.filterOn(k)
	var args []any
	if keys != nil {
		q += " AND " + k + "::text = ANY ($1)"
		args = append(args, keys)
	}
	return q + " GROUP BY " + k + " ORDER BY " + order, args
}

// compareKeys orders key values (as text) as the per-key query does.
func (e *Engine) compareKeys(a, b string) int {
	if e.cfg.Move.KeyType == shardmap.KeyBigint {
		x, err1 := strconv.ParseInt(a, 10, 64)
		y, err2 := strconv.ParseInt(b, 10, 64)
		if err1 == nil && err2 == nil {
			return cmp.Compare(x, y)
		}
	}
	return strings.Compare(a, b)
}

// diffKeys merges the per-key aggregates of both sides (the source read
// first, the target once it has applied the source's position then) and
// returns up to limit keys that differ.
func (e *Engine) diffKeys(ctx context.Context, t Table, only []string, limit int) ([]string, error) {
	q, args := e.perKeyQuery(t, only)
	var src []keyAgg
	var lsn health.LSN
	err := e.withConn(ctx, e.source(), func(conn *pgx.Conn) error {
		var err error
		src, err = readKeyAggs(ctx, conn, q, args)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.source(), err)
	}
	if lsn, err = e.markLSN(ctx); err != nil {
		return nil, err
	}
	if err := e.waitApplied(ctx, lsn, false); err != nil {
		return nil, err
	}
	var tgt []keyAgg
	err = e.withConn(ctx, e.target(), func(conn *pgx.Conn) error {
		var err error
		tgt, err = readKeyAggs(ctx, conn, q, args)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.target(), err)
	}
	var diff []string
	i, j := 0, 0
	for (i < len(src) || j < len(tgt)) && len(diff) < limit {
		switch {
		case j >= len(tgt) || (i < len(src) && e.compareKeys(src[i].key, tgt[j].key) < 0):
			diff = append(diff, src[i].key)
			i++
		case i >= len(src) || e.compareKeys(src[i].key, tgt[j].key) > 0:
			diff = append(diff, tgt[j].key)
			j++
		default:
			if src[i] != tgt[j] {
				diff = append(diff, src[i].key)
			}
			i++
			j++
		}
	}
	return diff, nil
}

// readKeyAggs reads a per-key query. It holds the interval's keys in
// memory: one short string and two numbers per key, so tens of millions
// of keys fit in a few gigabytes; a streaming merge over two sessions
// would avoid that, at the price of holding a snapshot open on the
// source while the target catches up.
func readKeyAggs(ctx context.Context, conn *pgx.Conn, q string, args []any) ([]keyAgg, error) {
	rows, err := conn.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (keyAgg, error) {
		var k keyAgg
		err := r.Scan(&k.key, &k.count, &k.sum)
		return k, err
	})
}
