package reshard

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SequenceAdvance is what AdvanceSequences did to one sequence.
type SequenceAdvance struct {
	Table, Column, Sequence string
	// SourceNext is the value the source's sequence would hand out next;
	// TargetBefore and TargetAfter the target's, before and after.
	SourceNext, TargetBefore, TargetAfter int64
}

// AdvanceSequences makes the target's sequences of the moved tables — the
// ones owned by a column: serial and identity columns — continue past the
// source's: when the target's next value is below the source's (above it
// for a descending sequence) it is set to the source's (setval). It never
// moves a sequence back, so it is idempotent. Run it at cutover, after
// the fence and the catch-up, so no row inserted on the source afterwards
// can carry a value the target hands out again. Sequences that defaults
// use without owning them are not touched.
func (e *Engine) AdvanceSequences(ctx context.Context) ([]SequenceAdvance, error) {
	var out []SequenceAdvance
	for _, t := range e.cfg.Move.Tables {
		var srcSeqs []SequenceAdvance
		err := e.withConn(ctx, e.source(), func(conn *pgx.Conn) error {
			var err error
			srcSeqs, err = ownedSequences(ctx, conn, t)
			return err
		})
		if err != nil {
			return out, fmt.Errorf("reshard: sequences of %s on %s: %w", t.Name, e.source(), err)
		}
		if len(srcSeqs) == 0 {
			continue
		}
		err = e.withConn(ctx, e.target(), func(conn *pgx.Conn) error {
			tgtSeqs, err := ownedSequences(ctx, conn, t)
			if err != nil {
				return err
			}
			for _, s := range srcSeqs {
				var ts *SequenceAdvance
				for i := range tgtSeqs {
					if tgtSeqs[i].Column == s.Column {
						ts = &tgtSeqs[i]
					}
				}
				if ts == nil {
					return fmt.Errorf("column %s has no sequence on the target (the source's is %s)", s.Column, s.Sequence)
				}
				adv := SequenceAdvance{Table: t.Name, Column: s.Column, Sequence: ts.Sequence, SourceNext: s.SourceNext,
					TargetBefore: ts.SourceNext, TargetAfter: ts.SourceNext}
				var inc int64
				if err := conn.QueryRow(ctx, "SELECT seqincrement FROM pg_sequence WHERE seqrelid = $1::regclass", ts.Sequence).Scan(&inc); err != nil {
					return err
				}
				if (inc > 0 && ts.SourceNext < s.SourceNext) || (inc < 0 && ts.SourceNext > s.SourceNext) {
					if _, err := conn.Exec(ctx, "SELECT setval($1::regclass, $2, false)", ts.Sequence, s.SourceNext); err != nil {
						return fmt.Errorf("setval %s: %w", ts.Sequence, err)
					}
					adv.TargetAfter = s.SourceNext
				}
				out = append(out, adv)
			}
			return nil
		})
		if err != nil {
			return out, fmt.Errorf("reshard: sequences of %s on %s: %w", t.Name, e.target(), err)
		}
	}
	for _, a := range out {
		if a.TargetAfter != a.TargetBefore {
			e.log.Info("reshard: sequence advanced", "sequence", a.Sequence, "from", a.TargetBefore, "to", a.TargetAfter)
		}
	}
	return out, nil
}

// ownedSequences lists t's column-owned sequences with, in SourceNext,
// the value each would hand out next on this server.
func ownedSequences(ctx context.Context, conn *pgx.Conn, t Table) ([]SequenceAdvance, error) {
	rows, err := conn.Query(ctx, `SELECT a.attname::text, s.seq FROM pg_attribute a,
		LATERAL (SELECT pg_get_serial_sequence($1, a.attname) AS seq) s
		WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped AND s.seq IS NOT NULL ORDER BY a.attnum`, qualified(t.Name))
	if err != nil {
		return nil, err
	}
	seqs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SequenceAdvance, error) {
		var s SequenceAdvance
		err := r.Scan(&s.Column, &s.Sequence)
		return s, err
	})
	if err != nil {
		return nil, err
	}
	for i := range seqs {
		var last, inc int64
		var called bool
		err := conn.QueryRow(ctx, "SELECT last_value, is_called, (SELECT seqincrement FROM pg_sequence WHERE seqrelid = $1::regclass) FROM "+seqs[i].Sequence,
			seqs[i].Sequence).Scan(&last, &called, &inc)
		if err != nil {
			return nil, fmt.Errorf("read sequence %s: %w", seqs[i].Sequence, err)
		}
		seqs[i].Table = t.Name
		seqs[i].SourceNext = last
		if called {
			seqs[i].SourceNext = last + inc
		}
	}
	return seqs, nil
}
