package difftest

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// MapYAML returns a shard map that distributes users by id and orders by
// user_id over shards, named s0, s1, ... and given by their primaries'
// addresses (host:port), with the "range" or "hash" strategy. A range map
// cuts at bounds (len(addrs)-1 of them, ascending): s0 below bounds[0],
// s1 from there to bounds[1], ...; a hash map spreads the keys evenly.
// s0 is the default shard.
func MapYAML(addrs []string, strategy string, bounds []int64) (string, error) {
	if strategy != "range" && strategy != "hash" {
		return "", fmt.Errorf("unknown strategy %q", strategy)
	}
	if strategy == "range" && len(bounds) != len(addrs)-1 {
		return "", fmt.Errorf("a range map over %d shards needs %d bounds, got %d", len(addrs), len(addrs)-1, len(bounds))
	}
	var b strings.Builder
	b.WriteString("epoch: 1\nshards:\n")
	names := make([]string, len(addrs))
	for i, a := range addrs {
		names[i] = ShardName(i)
		fmt.Fprintf(&b, "  - {name: %s, primary: %q}\n", names[i], a)
	}
	fmt.Fprintf(&b, "distributions:\n  - name: users\n    key_type: bigint\n    strategy: %s\n    default_shard: s0\n", strategy)
	if strategy == "range" {
		b.WriteString("    intervals:\n")
		lo := "-inf"
		for i := range addrs {
			hi := "+inf"
			if i < len(bounds) {
				hi = strconv.FormatInt(bounds[i], 10)
			}
			fmt.Fprintf(&b, "      - {lo: %s, hi: %s, shard: %s}\n", lo, hi, names[i])
			lo = hi
		}
	} else {
		fmt.Fprintf(&b, "    shards_even: [%s]\n", strings.Join(names, ", "))
	}
	b.WriteString("tables:\n  - {name: public.users, distribution: users, key: id}\n  - {name: public.orders, distribution: users, key: user_id}\n")
	return b.String(), nil
}

// ShardName is the name MapYAML gives the i-th shard.
func ShardName(i int) string { return fmt.Sprintf("s%d", i) }

// LoadThroughProxy creates the schema through pgshard (DDL on sharded
// tables runs on every shard), the functions on every shard named in
// shards (with a routing hint each, as they name no table), copies the
// dataset in through pgshard (binary COPY, split by key) and analyzes it.
func LoadThroughProxy(ctx context.Context, proxy *pgx.Conn, shards []string, size Size, seed uint64) error {
	if err := CreateSchema(ctx, proxy); err != nil {
		return err
	}
	for _, name := range shards {
		for _, f := range Functions {
			if _, err := proxy.Exec(ctx, "/* pgshard: shard="+name+" */ "+f); err != nil {
				return fmt.Errorf("shard %s: %w", name, err)
			}
		}
	}
	users, orders := Rows(size, seed)
	if err := CopyRows(ctx, proxy, users, orders); err != nil {
		return fmt.Errorf("through pgshard: %w", err)
	}
	return Analyze(ctx, proxy)
}
