package difftest

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/shardmap"
)

// Table is a sharded table of the dataset and its bigint key column.
type Table struct{ Name, Key string }

// Tables are the dataset's sharded tables.
var Tables = []Table{{"users", "id"}, {"orders", "user_id"}}

// maxReported bounds the problems reported per table and kind.
const maxReported = 5

// CheckPlacement queries the shards directly (shards maps the names d
// uses to connections to their servers) and checks that every row of
// tables sits on the shard d assigns its key to, and that the shards
// together hold exactly the reference's rows, compared as multisets of
// whole rows. It returns the problems found; the error is for queries
// that failed.
func CheckPlacement(ctx context.Context, ref *pgx.Conn, shards map[string]*pgx.Conn, d *shardmap.Distribution, tables []Table) ([]string, error) {
	names := make([]string, 0, len(shards))
	for name := range shards {
		names = append(names, name)
	}
	slices.Sort(names)
	var problems []string
	for _, t := range tables {
		want, _, err := tableRows(ctx, ref, t)
		if err != nil {
			return nil, fmt.Errorf("reference: %w", err)
		}
		var all []string
		for _, name := range names {
			rows, keys, err := tableRows(ctx, shards[name], t)
			if err != nil {
				return nil, fmt.Errorf("shard %s: %w", name, err)
			}
			bad, err := Misplaced(d, name, keys)
			if err != nil {
				return nil, fmt.Errorf("shard %s: %w", name, err)
			}
			if len(bad) > 0 {
				problems = append(problems, fmt.Sprintf("%s: %d rows on shard %s belong elsewhere, keys %v", t.Name, len(bad), name, bad[:min(len(bad), maxReported)]))
			}
			all = append(all, rows...)
		}
		if missing, extra := MultisetDiff(want, all); len(missing)+len(extra) > 0 {
			problems = append(problems, fmt.Sprintf("%s: the shards hold %d rows, the reference %d; %d missing on the shards %q, %d extra %q",
				t.Name, len(all), len(want), len(missing), missing[:min(len(missing), maxReported)], len(extra), extra[:min(len(extra), maxReported)]))
		}
	}
	return problems, nil
}

// tableRows returns every row of t as its text form (the row cast to
// text) and its key.
func tableRows(ctx context.Context, c *pgx.Conn, t Table) (rows []string, keys []int64, err error) {
	sql := fmt.Sprintf("SELECT t.%s, t::text FROM %s t", pgx.Identifier{t.Key}.Sanitize(), pgx.Identifier{t.Name}.Sanitize())
	res, err := c.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", t.Name, err)
	}
	defer res.Close()
	for res.Next() {
		raw := res.RawValues()
		k, err := strconv.ParseInt(string(raw[0]), 10, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: key %q: %w", t.Name, raw[0], err)
		}
		keys = append(keys, k)
		rows = append(rows, string(raw[1]))
	}
	if err := res.Err(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", t.Name, err)
	}
	return rows, keys, nil
}

// Misplaced returns the keys that d assigns to another shard than shard.
func Misplaced(d *shardmap.Distribution, shard string, keys []int64) ([]int64, error) {
	var bad []int64
	for _, k := range keys {
		s, err := d.ShardForInt64(k)
		if err != nil {
			return nil, err
		}
		if s != shard {
			bad = append(bad, k)
		}
	}
	return bad, nil
}

// MultisetDiff returns the elements of want missing from got and those
// got has beyond want, counting repeats, each sorted.
func MultisetDiff(want, got []string) (missing, extra []string) {
	a, b := slices.Clone(want), slices.Clone(got)
	slices.Sort(a)
	slices.Sort(b)
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || i < len(a) && strings.Compare(a[i], b[j]) < 0:
			missing = append(missing, a[i])
			i++
		case i == len(a) || strings.Compare(a[i], b[j]) > 0:
			extra = append(extra, b[j])
			j++
		default:
			i++
			j++
		}
	}
	return missing, extra
}
