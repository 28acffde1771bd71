package shardbench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap"
)

// The names the map gives the workload's distribution and tables.
const (
	Distribution  = "accounts"
	AccountsTable = "public.pgbench_accounts"
	HistoryTable  = "public.pgbench_history"
	KeyColumn     = "aid"
)

// Setup is a shard map for the workload and the servers of its shards.
type Setup struct {
	// Map distributes pgbench_accounts and pgbench_history by aid.
	Map *shardmap.Map
	// Servers[i] is the primary of Map.Shards[i].
	Servers []*pgcluster.Server
	// Scale is the number of AccountsPerScale accounts.
	Scale int
}

// ShardName is the name NewSetup gives the i-th shard.
func ShardName(i int) string { return "s" + strconv.Itoa(i) }

// NewSetup builds the map for servers, shard i on servers[i]: with
// strategy range the aids 1 to scale*AccountsPerScale are cut into
// len(servers) runs of equal length (the first interval starts at -inf,
// the last one ends at +inf); with strategy hash the hash space is cut
// into equal intervals (shards_even). Both tables use the one
// distribution, so an account and its history rows are on one shard.
func NewSetup(strategy shardmap.Strategy, servers []*pgcluster.Server, scale int) (*Setup, error) {
	if len(servers) == 0 || scale < 1 {
		return nil, fmt.Errorf("shardbench: need at least one server and a positive scale (got %d, %d)", len(servers), scale)
	}
	m := &shardmap.Map{Epoch: 1}
	names := make([]string, len(servers))
	for i, s := range servers {
		names[i] = ShardName(i)
		m.Shards = append(m.Shards, shardmap.Shard{
			Name:    names[i],
			Primary: shardmap.Endpoint{Host: s.Host, Port: s.Port},
			State:   shardmap.StateActive,
		})
	}
	d := shardmap.Distribution{
		Name:         Distribution,
		KeyType:      shardmap.KeyBigint,
		Strategy:     strategy,
		DefaultShard: names[0],
	}
	switch strategy {
	case shardmap.Hash:
		d.Intervals = shardmap.EvenHashIntervals(names)
	case shardmap.Range:
		d.Intervals = rangeIntervals(names, int64(scale)*AccountsPerScale)
	default:
		return nil, fmt.Errorf("shardbench: unknown strategy %q", strategy)
	}
	m.Distributions = []shardmap.Distribution{d}
	m.Tables = []shardmap.Table{
		{Name: AccountsTable, Kind: shardmap.Sharded, KeyColumn: KeyColumn, Distribution: Distribution},
		{Name: HistoryTable, Kind: shardmap.Sharded, KeyColumn: KeyColumn, Distribution: Distribution},
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("shardbench: %w", err)
	}
	return &Setup{Map: m, Servers: servers, Scale: scale}, nil
}

// rangeIntervals cuts the keys 1..n into len(shards) runs of equal length
// (to within one), the i-th on shards[i], from -inf to +inf.
func rangeIntervals(shards []string, n int64) []shardmap.Interval {
	k := int64(len(shards))
	out := make([]shardmap.Interval, k)
	lo := shardmap.NegInf()
	for i := range k {
		hi := shardmap.PosInf()
		if i+1 < k {
			hi = shardmap.Int64Bound(1 + (i+1)*n/k)
		}
		out[i] = shardmap.Interval{Lo: lo, Hi: hi, Shard: shards[i]}
		lo = hi
	}
	return out
}

// Accounts returns the number of accounts, scale*AccountsPerScale.
func (s *Setup) Accounts() int64 { return int64(s.Scale) * AccountsPerScale }

// distribution returns the workload's distribution of the map.
func (s *Setup) distribution() *shardmap.Distribution { return s.Map.Distribution(Distribution) }

// ShardOf returns the index in Servers of the shard the map assigns aid to.
func (s *Setup) ShardOf(aid int64) (int, error) {
	name, err := s.distribution().ShardForInt64(aid)
	if err != nil {
		return 0, fmt.Errorf("shardbench: aid %d: %w", aid, err)
	}
	for i := range s.Map.Shards {
		if s.Map.Shards[i].Name == name {
			return i, nil
		}
	}
	return 0, fmt.Errorf("shardbench: aid %d: map names unknown shard %q", aid, name)
}

// WriteMap writes the map's YAML form to path, for shard_map_file.
func (s *Setup) WriteMap(path string) error {
	b, err := s.Map.YAML()
	if err != nil {
		return fmt.Errorf("shardbench: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("shardbench: write shard map: %w", err)
	}
	return nil
}

// ownedPredicate returns an SQL condition on the column aid that holds for
// exactly the aids the map puts on shard: the key (range) or its hash
// (hash, computed by PostgreSQL with the map's seed) in one of the shard's
// intervals. It is how Load fills each shard without pgshard, and it is
// independent of the Go lookups Check uses to verify it.
func (s *Setup) ownedPredicate(shard string) (string, error) {
	d := s.distribution()
	pos := KeyColumn
	if d.Strategy == shardmap.Hash {
		pos = d.KeyType.HashSQL(KeyColumn)
	}
	var ors []string
	for _, iv := range d.Intervals {
		if iv.Shard != shard {
			continue
		}
		conds := []string{"true"}
		if lo, ok := iv.Lo.Int64(); ok {
			conds = append(conds, fmt.Sprintf("%s >= %d", pos, lo))
		}
		if hi, ok := iv.Hi.Int64(); ok {
			conds = append(conds, fmt.Sprintf("%s < %d", pos, hi))
		}
		ors = append(ors, "("+strings.Join(conds, " AND ")+")")
	}
	if len(ors) == 0 {
		return "", fmt.Errorf("shardbench: shard %s owns no interval", shard)
	}
	return strings.Join(ors, " OR "), nil
}

// Load creates the tables on every shard and fills each shard's
// pgbench_accounts with the accounts the map assigns to it (balance 0),
// straight into the servers, then vacuums and analyzes them. The history
// starts empty.
func (s *Setup) Load(ctx context.Context) error {
	for i, srv := range s.Servers {
		name := s.Map.Shards[i].Name
		pred, err := s.ownedPredicate(name)
		if err != nil {
			return err
		}
		load := Schema + fmt.Sprintf(`
INSERT INTO pgbench_accounts (aid, bid, abalance, filler)
SELECT aid, (aid - 1) / %d + 1, 0, '' FROM generate_series(1, %d) AS g(aid) WHERE %s;
`, AccountsPerScale, s.Accounts(), pred)
		if err := srv.Exec(ctx, load); err != nil {
			return fmt.Errorf("shardbench: load shard %s: %w", name, err)
		}
		if err := srv.Exec(ctx, "VACUUM ANALYZE pgbench_accounts, pgbench_history"); err != nil {
			return fmt.Errorf("shardbench: vacuum shard %s: %w", name, err)
		}
	}
	return nil
}
