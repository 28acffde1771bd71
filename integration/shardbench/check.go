package shardbench

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/internal/pgcluster"
)

// ShardTotals is what Check found on one shard.
type ShardTotals struct {
	Name     string
	Accounts int64 // rows in pgbench_accounts
	History  int64 // rows in pgbench_history
	Balance  int64 // sum(abalance)
	Delta    int64 // sum(delta) of the history
	// Misplaced counts rows (accounts and history) of aids the map puts
	// on another shard; Unbalanced counts accounts whose balance is not
	// the sum of their deltas.
	Misplaced, Unbalanced int64
}

// Totals is what Check found over all shards.
type Totals struct {
	Accounts, History, Balance, Delta, Misplaced, Unbalanced int64
	// Missing counts the aids 1..Accounts on no shard, Duplicated the
	// account rows of aids already seen on another shard (or out of
	// range).
	Missing, Duplicated int64
	Shards              []ShardTotals
}

// Check reads every shard directly and verifies the workload's invariants:
// every account and every history row is on the shard the map assigns its
// aid to (by the Go lookup, not the SQL that loaded it), the aids
// 1..Accounts are each there exactly once, and each account's balance is
// the sum of its logged deltas — so the balances add up to the deltas on
// every shard and over all of them. It returns the totals, also when an
// invariant fails; the error lists the failures.
func (s *Setup) Check(ctx context.Context) (Totals, error) {
	var tot Totals
	var errs []error
	seen := make([]bool, s.Accounts()+1)
	for i, srv := range s.Servers {
		st, err := s.checkShard(ctx, i, srv, seen)
		if err != nil {
			errs = append(errs, err)
		}
		tot.Shards = append(tot.Shards, st)
		tot.Accounts += st.Accounts
		tot.History += st.History
		tot.Balance += st.Balance
		tot.Delta += st.Delta
		tot.Misplaced += st.Misplaced
		tot.Unbalanced += st.Unbalanced
	}
	tot.Duplicated = tot.Accounts
	for aid := int64(1); aid <= s.Accounts(); aid++ {
		if seen[aid] {
			tot.Duplicated--
		} else {
			tot.Missing++
		}
	}
	if tot.Missing > 0 {
		errs = append(errs, fmt.Errorf("%d of the %d accounts are on no shard", tot.Missing, s.Accounts()))
	}
	if tot.Balance != tot.Delta {
		errs = append(errs, fmt.Errorf("sum(abalance) over all shards is %d, sum(delta) of the history %d", tot.Balance, tot.Delta))
	}
	if err := errors.Join(errs...); err != nil {
		return tot, fmt.Errorf("shardbench: check: %w", err)
	}
	return tot, nil
}

// maxReported bounds the misplaced rows one error lists.
const maxReported = 5

// checkShard verifies the rows of shard i, marking its aids in seen.
func (s *Setup) checkShard(ctx context.Context, i int, srv *pgcluster.Server, seen []bool) (ShardTotals, error) {
	st := ShardTotals{Name: s.Map.Shards[i].Name}
	conn, err := pgx.Connect(ctx, srv.SuperDSN("postgres"))
	if err != nil {
		return st, fmt.Errorf("shard %s: connect: %w", st.Name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var errs []error
	var misplaced []string
	place := func(table string, aid int64) {
		owner, err := s.ShardOf(aid)
		switch {
		case err != nil:
			errs = append(errs, err)
		case owner != i:
			st.Misplaced++
			if len(misplaced) < maxReported {
				misplaced = append(misplaced, fmt.Sprintf("%s aid %d (belongs on %s)", table, aid, s.Map.Shards[owner].Name))
			} else if len(misplaced) == maxReported {
				misplaced = append(misplaced, "…")
			}
		}
	}

	rows, err := conn.Query(ctx, "SELECT aid, abalance FROM pgbench_accounts")
	if err != nil {
		return st, fmt.Errorf("shard %s: read accounts: %w", st.Name, err)
	}
	var aid, balance int64
	_, err = pgx.ForEachRow(rows, []any{&aid, &balance}, func() error {
		st.Accounts++
		st.Balance += balance
		place("pgbench_accounts", aid)
		switch {
		case aid < 1 || aid >= int64(len(seen)):
			errs = append(errs, fmt.Errorf("shard %s: unexpected account aid %d", st.Name, aid))
		case seen[aid]:
			errs = append(errs, fmt.Errorf("shard %s: account aid %d is also on another shard", st.Name, aid))
		default:
			seen[aid] = true
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("shard %s: read accounts: %w", st.Name, err)
	}

	rows, err = conn.Query(ctx, "SELECT aid, delta FROM pgbench_history")
	if err != nil {
		return st, fmt.Errorf("shard %s: read history: %w", st.Name, err)
	}
	var delta int64
	_, err = pgx.ForEachRow(rows, []any{&aid, &delta}, func() error {
		st.History++
		st.Delta += delta
		place("pgbench_history", aid)
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("shard %s: read history: %w", st.Name, err)
	}
	if len(misplaced) > 0 {
		errs = append(errs, fmt.Errorf("shard %s holds rows of other shards: %s", st.Name, strings.Join(misplaced, ", ")))
	}

	// Colocation makes the balance of each account checkable on its shard.
	var example string
	err = conn.QueryRow(ctx, `
SELECT count(*), coalesce(min(format('aid %s: abalance %s, sum(delta) %s', a.aid, a.abalance, coalesce(h.delta, 0))), '')
FROM pgbench_accounts a LEFT JOIN (SELECT aid, sum(delta) AS delta FROM pgbench_history GROUP BY aid) h USING (aid)
WHERE a.abalance <> coalesce(h.delta, 0)`).Scan(&st.Unbalanced, &example)
	if err != nil {
		return st, fmt.Errorf("shard %s: compare balances with history: %w", st.Name, err)
	}
	if st.Unbalanced > 0 {
		errs = append(errs, fmt.Errorf("shard %s: %d accounts' balances differ from the sum of their deltas (e.g. %s)", st.Name, st.Unbalanced, example))
	}
	if st.Balance != st.Delta {
		errs = append(errs, fmt.Errorf("shard %s: sum(abalance) %d, sum(delta) %d", st.Name, st.Balance, st.Delta))
	}
	return st, errors.Join(errs...)
}
