package stream

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgshard/pgshard/cache"
)

// sink is what the decoder reports to (a *cache.ShardStream).
type sink interface {
	Invalidate(table string, rowKey []byte, commitLSN cache.LSN, commitTime time.Time)
	InvalidateTable(table string, commitLSN cache.LSN, commitTime time.Time)
	Committed(end cache.LSN, commitTime time.Time)
}

// relation is what the decoder knows of a relation from its Relation
// message.
type relation struct {
	table  string // schema.name
	cached bool   // one of the configured tables
	keyIdx int    // the key column's position, -1 when absent
	// keyInIdentity: the server sends the key column in the old tuple of
	// an UPDATE that changes it and of every DELETE.
	keyInIdentity bool
	warned        bool
}

// decoder turns pgoutput messages into invalidations.
type decoder struct {
	tables map[string]string // table → key column
	out    sink
	log    *slog.Logger
	rels   map[uint32]*relation
	txLSN  cache.LSN
	txTime time.Time
}

func newDecoder(tables map[string]string, out sink, log *slog.Logger) *decoder {
	return &decoder{tables: tables, out: out, log: log, rels: map[uint32]*relation{}}
}

// apply decodes one pgoutput message; it returns the transaction's end LSN
// at a commit, else 0.
func (d *decoder) apply(data []byte) (pglogrepl.LSN, error) {
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		return 0, fmt.Errorf("decode pgoutput message: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		d.relation(m)
	case *pglogrepl.BeginMessage:
		d.txLSN, d.txTime = cache.LSN(m.FinalLSN), m.CommitTime
	case *pglogrepl.CommitMessage:
		d.out.Committed(cache.LSN(m.TransactionEndLSN), m.CommitTime)
		return m.TransactionEndLSN, nil
	case *pglogrepl.InsertMessage:
		if rel := d.cachedRel(m.RelationID); rel != nil {
			d.keyOf(rel, m.Tuple, false)
		}
	case *pglogrepl.UpdateMessage:
		if rel := d.cachedRel(m.RelationID); rel != nil {
			// The new key; then the old one when it is sent (the key
			// changed, or REPLICA IDENTITY FULL). Without an old tuple
			// the key is unchanged only if it is in the identity.
			if !d.keyOf(rel, m.NewTuple, false) {
				return 0, nil
			}
			if m.OldTuple != nil {
				d.keyOf(rel, m.OldTuple, true)
			} else if !rel.keyInIdentity {
				d.tableWide(rel, "UPDATE")
			}
		}
	case *pglogrepl.DeleteMessage:
		if rel := d.cachedRel(m.RelationID); rel != nil {
			if m.OldTuple == nil {
				d.tableWide(rel, "DELETE")
			} else {
				d.keyOf(rel, m.OldTuple, true)
			}
		}
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			if rel := d.cachedRel(id); rel != nil {
				d.out.InvalidateTable(rel.table, d.txLSN, d.txTime)
			}
		}
	}
	return 0, nil
}

func (d *decoder) relation(m *pglogrepl.RelationMessage) {
	table := m.Namespace + "." + m.RelationName
	rel := &relation{table: table, keyIdx: -1}
	if keyCol, ok := d.tables[table]; ok {
		rel.cached = true
		for i, c := range m.Columns {
			if c.Name == keyCol {
				rel.keyIdx = i
				rel.keyInIdentity = c.Flags&1 != 0 || m.ReplicaIdentity == 'f'
			}
		}
		if rel.keyIdx < 0 {
			d.log.Warn("cacheable table lacks its key column: every change invalidates the whole table", "table", table, "key", keyCol)
		}
	}
	d.rels[m.RelationID] = rel
}

func (d *decoder) cachedRel(id uint32) *relation {
	rel := d.rels[id]
	if rel == nil || !rel.cached {
		return nil
	}
	return rel
}

// keyOf invalidates the key found in tup. In an old tuple a NULL key column
// may mean "not sent" (not in the identity). When the key cannot be read
// it invalidates the table and reports false.
func (d *decoder) keyOf(rel *relation, tup *pglogrepl.TupleData, old bool) bool {
	if rel.keyIdx < 0 || tup == nil || rel.keyIdx >= len(tup.Columns) {
		d.out.InvalidateTable(rel.table, d.txLSN, d.txTime)
		return false
	}
	col := tup.Columns[rel.keyIdx]
	switch col.DataType {
	case pglogrepl.TupleDataTypeText:
		d.out.Invalidate(rel.table, col.Data, d.txLSN, d.txTime)
		return true
	case pglogrepl.TupleDataTypeNull:
		if old && !rel.keyInIdentity {
			d.tableWide(rel, "DELETE or UPDATE")
			return false
		}
		return true // a NULL key: no point read finds the row
	default: // 'u' (unchanged TOAST value, not sent) or binary
		d.out.InvalidateTable(rel.table, d.txLSN, d.txTime)
		return false
	}
}

func (d *decoder) tableWide(rel *relation, what string) {
	if !rel.warned {
		rel.warned = true
		d.log.Warn("the sharding key is not in the table's replica identity: each "+what+" invalidates the whole table (make it part of the primary key, or ALTER TABLE ... REPLICA IDENTITY)", "table", rel.table)
	}
	d.out.InvalidateTable(rel.table, d.txLSN, d.txTime)
}
