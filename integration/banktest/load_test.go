package banktest_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/internal/pgcluster"
)

// outcome is what a client knows of a transfer.
type outcome int

const (
	// acked: COMMIT answered COMMIT.
	acked outcome = iota
	// failed: an error before COMMIT (COMMIT never sent), COMMIT answered
	// ROLLBACK, or a COMMIT error that means the transaction was rolled
	// back on every shard (any SQLSTATE but 08007 and class 08).
	failed
	// unknown: the connection died during COMMIT, or COMMIT failed with
	// 08007 (transaction_resolution_unknown) or another class 08 error.
	unknown
)

func (o outcome) String() string { return [...]string{"acknowledged", "failed", "unknown"}[o] }

// transfer is one entry of the client-side ledger.
type transfer struct {
	id            string // the transfers row's key, chosen by the client
	src, dst      int64
	amount        int64
	outcome       outcome
	phase, worker string
}

// clientErr is an error a client saw.
type clientErr struct {
	phase, worker, stage string
	code                 string // SQLSTATE; "" when there is none
	kind                 string // "sqlstate", "connection lost", "timeout"
	err                  error
}

// retryable are the SQLSTATEs README ("Transactions over several shards
// (two-phase commit)") documents for transactions over several shards:
// what a client may see while servers, proxies and meta members die, and
// whether it may retry the transaction.
var documented = map[string]string{
	"40001": "retry",                        // serialization failure
	"40P01": "retry",                        // deadlock
	"08006": "retry; at COMMIT check first", // a server connection lost
	"08000": "retry; at COMMIT check first",
	"08007": "check first", // transaction_resolution_unknown at COMMIT
	"40000": "retry",       // at COMMIT: a shard could not prepare (its connection lost); rolled back everywhere
	"57P01": "retry",       // the server shut down (fenced primary ends its sessions)
}

// load is the transfers of the workers, and their ledger.
type load struct {
	e      *env
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu        sync.Mutex
	phase     string
	transfers []transfer
	errs      []clientErr
	nAcked    int
	// ackedOn: per shard, when each acknowledged transfer touching it
	// was acknowledged.
	ackedOn [4][]time.Time
}

// startLoad starts workersPerProxy workers per proxy.
func (e *env) startLoad(t *testing.T) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{e: e, cancel: cancel, phase: "start"}
	for i := range workersPerProxy * len(e.proxies) {
		l.wg.Go(func() { l.worker(ctx, t, i) })
	}
	return l
}

// stop ends the load and waits for its workers; it may be called twice.
func (l *load) stop() {
	l.once.Do(func() {
		l.cancel()
		l.wg.Wait()
	})
}

func (l *load) setPhase(p string) {
	l.mu.Lock()
	l.phase = p
	l.mu.Unlock()
}

// transferTimeout bounds one transfer (lock waits behind a prepared
// transaction included).
const transferTimeout = 45 * time.Second

// worker runs transfers until ctx ends: worker i connects to proxy i%2
// (the other one while that one is down), with the simple protocol when
// (i/2)%2 == 1, else pgx's default (extended, cached statements).
func (l *load) worker(ctx context.Context, t *testing.T, i int) {
	simple := (i/2)%2 == 1
	name := fmt.Sprintf("w%d/%s", i, map[bool]string{true: "simple", false: "extended"}[simple])
	rng := mrand.New(mrand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
	var c *pgx.Conn
	defer func() {
		if c != nil {
			_ = c.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		if c == nil {
			if c = l.dial(ctx, i, simple, name); c == nil {
				return
			}
		}
		src := rng.Int64N(nAccounts) + 1
		dst := rng.Int64N(nAccounts-1) + 1
		if dst >= src {
			dst++
		}
		tr := transfer{id: newUUID(t), src: src, dst: dst, amount: rng.Int64N(100) + 1, worker: name}
		l.mu.Lock()
		tr.phase = l.phase
		l.mu.Unlock()
		stage, err := l.run(ctx, t, c, &tr)
		l.mu.Lock()
		l.transfers = append(l.transfers, tr)
		if tr.outcome == acked {
			l.nAcked++
			now := time.Now()
			for _, a := range []int64{tr.src, tr.dst} {
				s := l.e.shardOf(t, a)
				if len(l.ackedOn[s]) == 0 || l.ackedOn[s][len(l.ackedOn[s])-1] != now {
					l.ackedOn[s] = append(l.ackedOn[s], now)
				}
			}
		}
		if err != nil && ctx.Err() == nil {
			l.errs = append(l.errs, classify(l.phase, name, stage, err))
		}
		l.mu.Unlock()
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = c.Close(cctx)
			cancel()
			c = nil
			time.Sleep(10 * time.Millisecond) // a client's retry pause
		}
	}
}

// classify describes err, seen at stage.
func classify(phase, worker, stage string, err error) clientErr {
	ce := clientErr{phase: phase, worker: worker, stage: stage, err: err, kind: "connection lost"}
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe):
		ce.code, ce.kind = pe.Code, "sqlstate"
	case errors.Is(err, context.DeadlineExceeded):
		ce.kind = "timeout"
	}
	return ce
}

// dial connects worker i to its proxy, or to the other one while its
// own is down, retrying until ctx ends (nil then).
func (l *load) dial(ctx context.Context, i int, simple bool, name string) *pgx.Conn {
	for n := 0; ctx.Err() == nil; n++ {
		p := l.e.proxies[(i+n)%len(l.e.proxies)]
		cfg, err := pgx.ParseConfig(p.DSN(""))
		if err != nil {
			panic(err)
		}
		cfg.ConnectTimeout = 5 * time.Second
		if simple {
			cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		}
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			return c
		}
		var pe *pgconn.PgError
		if errors.As(err, &pe) && ctx.Err() == nil {
			l.mu.Lock()
			l.errs = append(l.errs, classify(l.phase, name, "connect", err))
			l.mu.Unlock()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// run runs tr on c (the lower account first, so that transfers never
// wait on each other in a cycle), filling in its outcome, and returns
// the stage that failed and the error.
func (l *load) run(ctx context.Context, t *testing.T, c *pgx.Conn, tr *transfer) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, transferTimeout)
	defer cancel()
	tr.outcome = failed
	lo, hi := min(tr.src, tr.dst), max(tr.src, tr.dst)
	delta := func(a int64) int64 {
		if a == tr.src {
			return -tr.amount
		}
		return tr.amount
	}
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		return "BEGIN", err
	}
	for _, a := range []int64{lo, hi} {
		tag, err := c.Exec(ctx, "UPDATE accounts SET balance = balance + $1 WHERE id = $2", delta(a), a)
		if err != nil {
			return "UPDATE", err
		}
		if tag.String() != "UPDATE 1" {
			t.Errorf("%s: UPDATE of account %d: %q", tr.worker, a, tag)
			return "UPDATE", errors.New("wrong row count")
		}
	}
	// The ledger's row, on the transfer's first shard.
	if _, err := c.Exec(ctx, "INSERT INTO transfers (acct, id, src, dst, amount) VALUES ($1, $2, $3, $4, $5)",
		lo, tr.id, tr.src, tr.dst, tr.amount); err != nil {
		return "INSERT", err
	}
	tag, err := c.Exec(ctx, "COMMIT")
	var pe *pgconn.PgError
	switch {
	case err == nil && tag.String() == "COMMIT":
		tr.outcome = acked
	case err == nil:
		// ROLLBACK: the transaction had failed.
	case errors.As(err, &pe) && !strings.HasPrefix(pe.Code, "08"):
		// Rolled back on every shard (README).
	default:
		tr.outcome = unknown
	}
	return "COMMIT", err
}

// newUUID returns a random UUID (version 4) as text.
func newUUID(t *testing.T) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Error(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (l *load) acked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nAcked
}

// waitAcked waits until n more transfers are acknowledged.
func (l *load) waitAcked(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	want := l.acked() + n
	deadline := time.Now().Add(timeout)
	for l.acked() < want {
		if time.Now().After(deadline) {
			l.mu.Lock()
			errs := l.errs[max(0, len(l.errs)-5):]
			l.mu.Unlock()
			t.Fatalf("fewer than %d transfers acknowledged within %s (now %d); last errors: %v", n, timeout, l.acked(), errs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitShardAcked waits until n transfers touching shard were
// acknowledged after since.
func (l *load) waitShardAcked(t *testing.T, shard int, since time.Time, n int, timeout time.Duration) {
	t.Helper()
	count := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		k := 0
		for _, at := range l.ackedOn[shard] {
			if at.After(since) {
				k++
			}
		}
		return k
	}
	deadline := time.Now().Add(timeout)
	for count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d transfers touching s%d acknowledged within %s", n, shard, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// row is a transfers row.
type row struct {
	src, dst, amount int64
	shard            int
}

// verify checks the bank against the ledger on the primaries (s0 to s3).
func (l *load) verify(t *testing.T, e *env, prims []*pgcluster.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	balances := map[int64]int64{}
	rows := map[string]row{}
	var total int64
	type acct struct{ ID, Balance int64 }
	type tx struct {
		Acct             int64
		ID               string
		Src, Dst, Amount int64
	}
	// read reads s's accounts and transfers.
	read := func(s *pgcluster.Server) ([]acct, []tx, error) {
		c, err := pgx.Connect(ctx, s.SuperDSN("postgres"))
		if err != nil {
			return nil, nil, fmt.Errorf("connect to %s: %w", s.Name, err)
		}
		defer c.Close(context.Background())
		r, err := c.Query(ctx, "SELECT id, balance FROM accounts")
		if err != nil {
			return nil, nil, fmt.Errorf("%s: accounts: %w", s.Name, err)
		}
		accts, err := pgx.CollectRows(r, pgx.RowToStructByPos[acct])
		if err != nil {
			return nil, nil, fmt.Errorf("%s: accounts: %w", s.Name, err)
		}
		r, err = c.Query(ctx, "SELECT acct, id::text, src, dst, amount FROM transfers")
		if err != nil {
			return nil, nil, fmt.Errorf("%s: transfers: %w", s.Name, err)
		}
		txs, err := pgx.CollectRows(r, pgx.RowToStructByPos[tx])
		if err != nil {
			return nil, nil, fmt.Errorf("%s: transfers: %w", s.Name, err)
		}
		return accts, txs, nil
	}
	for i, s := range prims {
		accts, txs, err := read(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range accts {
			balances[a.ID] = a.Balance
			total += a.Balance
		}
		for _, x := range txs {
			if prev, dup := rows[x.ID]; dup {
				t.Errorf("transfer %s recorded twice (s%d and s%d)", x.ID, prev.shard, i)
			}
			if e.shardOf(t, x.Acct) != i || x.Acct != min(x.Src, x.Dst) {
				t.Errorf("transfer %s's row (acct %d) is on s%d", x.ID, x.Acct, i)
			}
			rows[x.ID] = row{src: x.Src, dst: x.Dst, amount: x.Amount, shard: i}
		}
	}
	if len(balances) != nAccounts {
		t.Errorf("%d accounts, want %d", len(balances), nAccounts)
	}
	if want := int64(nAccounts * initialBalance); total != want {
		t.Errorf("total balance %d, want %d: money was created or lost", total, want)
	}
	// Every account is its initial balance plus exactly the transfers
	// that committed (their rows): each transfer all or nothing.
	want := map[int64]int64{}
	for _, r := range rows {
		want[r.src] -= r.amount
		want[r.dst] += r.amount
	}
	bad := 0
	for id := int64(1); id <= nAccounts; id++ {
		if got, w := balances[id], initialBalance+want[id]; got != w {
			bad++
			if bad <= 5 {
				t.Errorf("account %d: balance %d, want %d from the committed transfers", id, got, w)
			}
		}
	}
	if bad > 5 {
		t.Errorf("... %d accounts in all do not match the committed transfers", bad)
	}

	// The ledger.
	l.mu.Lock()
	defer l.mu.Unlock()
	count := map[string]int{}
	seen := make(map[string]bool, len(l.transfers))
	for _, tr := range l.transfers {
		seen[tr.id] = true
		r, ok := rows[tr.id]
		if ok && (r.src != tr.src || r.dst != tr.dst || r.amount != tr.amount) {
			t.Errorf("transfer %s: row %+v, the client sent %d -> %d (%d)", tr.id, r, tr.src, tr.dst, tr.amount)
		}
		switch {
		case tr.outcome == acked && !ok:
			t.Errorf("acknowledged transfer %s (%s, phase %s) is not applied", tr.id, tr.worker, tr.phase)
		case tr.outcome == failed && ok:
			t.Errorf("failed transfer %s (%s, phase %s) is applied", tr.id, tr.worker, tr.phase)
		}
		k := tr.outcome.String()
		if tr.outcome == unknown {
			k += map[bool]string{true: " (applied)", false: " (not applied)"}[ok]
		}
		count[k]++
	}
	for id := range rows {
		if !seen[id] {
			t.Errorf("transfer %s is applied but no client made it", id)
		}
	}
	t.Logf("ledger: %d transfers: %v; %d transfer rows", len(l.transfers), count, len(rows))

	// The errors clients saw.
	byKind := map[string]int{}
	for _, ce := range l.errs {
		k := fmt.Sprintf("%s: %s at %s", ce.phase, ce.kind, ce.stage)
		if ce.code != "" {
			k = fmt.Sprintf("%s: %s at %s", ce.phase, ce.code, ce.stage)
			if _, ok := documented[ce.code]; !ok {
				t.Errorf("%s (%s) at %s: undocumented SQLSTATE %s: %v", ce.worker, ce.phase, ce.stage, ce.code, ce.err)
			}
		}
		if ce.kind == "connection lost" && !strings.HasPrefix(ce.phase, "proxy kill") {
			t.Errorf("%s (%s) at %s: the connection to a proxy that runs was lost: %v", ce.worker, ce.phase, ce.stage, ce.err)
		}
		if ce.kind == "timeout" {
			t.Errorf("%s (%s): a transfer took longer than %s: %v", ce.worker, ce.phase, transferTimeout, ce.err)
		}
		byKind[k]++
	}
	keys := make([]string, 0, len(byKind))
	for k := range byKind {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %s: %d", k, byKind[k])
	}
	t.Logf("client errors by phase, SQLSTATE and statement:%s", b.String())
	for _, ce := range l.errs[:min(8, len(l.errs))] {
		t.Logf("  e.g. %s (%s) at %s: %v", ce.worker, ce.phase, ce.stage, ce.err)
	}
}
