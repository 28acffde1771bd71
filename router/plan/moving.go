package plan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pgshard/pgshard/shardmap"
)

// Moving intervals. While the map carries a moving-interval marker
// (shardmap.Moving) on a distribution, the planner tells the proxy which
// statements touch the marker's interval (Plan.Moving): one with a key
// value in [Lo, Hi) (of the key, or of its hash for a hash
// distribution), and a write without a key (a scatter UPDATE or DELETE,
// a COPY FROM) that reaches the marker's From shard. This extra work is
// done only when the distribution has a marker: without one, planning
// does not look at it.

// markMoving sets p.Moving and p.MovingDist for a plan of template t on
// a distribution with a marker. h is the hint the execution used.
func (st *state) markMoving(p *Plan, t *template, in *execInput, h Hint) {
	d := t.dist
	if p.Kind == Refused || p.Kind == Any || p.Stmt == StmtTx {
		return
	}
	hit := func(mv *shardmap.Moving) {
		if p.Moving == "" {
			p.Moving, p.MovingDist = mv.ID, d.Name
		}
	}
	if h.Key != "" && t.hintable && h.Shard == "" {
		if b, err := keyBound(d, h.Key, false); err == nil {
			movingOf(d, b, hit)
		}
		return
	}
	keyed := p.Reach == ReachKey && h.Shard == "" && t.classes != nil
	if keyed {
		for _, srcs := range t.classes {
			for _, src := range srcs {
				st.movingKeys(d, src, in, hit)
			}
		}
		if t.insert != nil {
			for _, src := range t.insert.rows {
				st.movingKeys(d, src, in, hit)
			}
		}
		if p.Moving != "" {
			return
		}
	}
	// A write that reaches From without naming its keys.
	write := p.Stmt == StmtInsert || p.Stmt == StmtUpdate || p.Stmt == StmtDelete || p.Stmt == StmtCopy && p.Kind == CopyIn
	if keyed || !write {
		return
	}
	for i := range d.Moving {
		mv := &d.Moving[i]
		if mv.Step == shardmap.MoveHold && slices.Contains(p.Shards, mv.From) {
			hit(mv)
			return
		}
	}
}

// movingKeys calls hit with the marker holding each key value src gives.
func (st *state) movingKeys(d *shardmap.Distribution, src valueSrc, in *execInput, hit func(*shardmap.Moving)) {
	v, bin, err := src.raw(in)
	if err != nil {
		return
	}
	one := func(e string) error {
		if b, err := keyBound(d, e, bin); err == nil {
			movingOf(d, b, hit)
		}
		return nil
	}
	switch {
	case !src.array:
		_ = one(v)
	case bin:
		_ = binaryArrayElems(v, one)
	default:
		_ = arrayElems(v, one)
	}
}

// movingOf calls hit with the marker in step hold whose interval holds b.
func movingOf(d *shardmap.Distribution, b shardmap.Bound, hit func(*shardmap.Moving)) {
	for i := range d.Moving {
		if mv := &d.Moving[i]; mv.Step == shardmap.MoveHold && mv.Contains(b) {
			hit(mv)
		}
	}
}

// keyBound returns the bound value of a key given as text or binary: the
// key for a range distribution, its hash for a hash one.
func keyBound(d *shardmap.Distribution, v string, bin bool) (shardmap.Bound, error) {
	hash := d.Strategy == shardmap.Hash
	switch d.KeyType {
	case shardmap.KeyBigint:
		var i int64
		if bin {
			switch len(v) {
			case 8:
				i = int64(binary.BigEndian.Uint64([]byte(v)))
			case 4:
				i = int64(int32(binary.BigEndian.Uint32([]byte(v))))
			case 2:
				i = int64(int16(binary.BigEndian.Uint16([]byte(v))))
			default:
				return shardmap.Bound{}, fmt.Errorf("binary integer key of %d bytes", len(v))
			}
		} else {
			var err error
			if i, err = parseInt(v); err != nil {
				return shardmap.Bound{}, err
			}
		}
		if hash {
			return shardmap.Int64Bound(shardmap.HashInt64(i)), nil
		}
		return shardmap.Int64Bound(i), nil
	case shardmap.KeyText:
		if hash {
			return shardmap.Int64Bound(shardmap.HashText(v)), nil
		}
		return shardmap.TextBound(v), nil
	case shardmap.KeyUUID:
		var u shardmap.UUID
		if bin {
			if len(v) != 16 {
				return shardmap.Bound{}, fmt.Errorf("binary uuid key of %d bytes", len(v))
			}
			copy(u[:], v)
		} else {
			var err error
			if u, err = shardmap.ParseUUID(strings.TrimSpace(v)); err != nil {
				return shardmap.Bound{}, err
			}
		}
		if hash {
			return shardmap.Int64Bound(shardmap.HashUUID(u)), nil
		}
		return shardmap.UUIDBound(u), nil
	}
	return shardmap.Bound{}, errors.New("unknown key type")
}
