package merge

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrShardsDisagree reports shards that describe the same statement's
// result differently (schema drift between shards).
var ErrShardsDisagree = errors.New("merge: shards return different row descriptions")

// CheckRowDescriptions checks that every shard's RowDescription frame
// (type byte, length and body) describes the same result: the same number
// of columns with the same names, types, type modifiers and formats. Table
// OIDs and attribute numbers may differ, as each shard has its own
// catalog. The error says which shard and column differ and how.
func CheckRowDescriptions(descs [][]byte) error {
	if len(descs) == 0 {
		return errors.New("merge: no row descriptions")
	}
	first, err := decodeRowDescription(descs[0])
	if err != nil {
		return fmt.Errorf("shard 0: %w", err)
	}
	for s := 1; s < len(descs); s++ {
		other, err := decodeRowDescription(descs[s])
		if err != nil {
			return fmt.Errorf("shard %d: %w", s, err)
		}
		if len(other) != len(first) {
			return fmt.Errorf("%w: shard 0 returns %d columns, shard %d returns %d", ErrShardsDisagree, len(first), s, len(other))
		}
		for c := range first {
			a, b := &first[c], &other[c]
			switch {
			case !bytes.Equal(a.Name, b.Name):
				return fmt.Errorf("%w: column %d is %q on shard 0 but %q on shard %d", ErrShardsDisagree, c+1, a.Name, b.Name, s)
			case a.DataTypeOID != b.DataTypeOID:
				return fmt.Errorf("%w: column %q has type %s on shard 0 but %s on shard %d", ErrShardsDisagree, a.Name, TypeName(a.DataTypeOID), TypeName(b.DataTypeOID), s)
			case a.TypeModifier != b.TypeModifier || a.DataTypeSize != b.DataTypeSize:
				return fmt.Errorf("%w: column %q of type %s has type modifier %d on shard 0 but %d on shard %d", ErrShardsDisagree, a.Name, TypeName(a.DataTypeOID), a.TypeModifier, b.TypeModifier, s)
			case a.Format != b.Format:
				return fmt.Errorf("%w: column %q has format %d on shard 0 but %d on shard %d", ErrShardsDisagree, a.Name, a.Format, b.Format, s)
			}
		}
	}
	return nil
}
