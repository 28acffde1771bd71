package shardbench

import (
	"strconv"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/internal/pgcluster"
	"github.com/pgshard/pgshard/shardmap"
)

func servers(n int) []*pgcluster.Server {
	s := make([]*pgcluster.Server, n)
	for i := range s {
		s[i] = &pgcluster.Server{Name: "pg" + strconv.Itoa(i), Host: "127.0.0.1", Port: 5432 + i}
	}
	return s
}

func TestRangeSetupCutsAidsEvenly(t *testing.T) {
	s, err := NewSetup(shardmap.Range, servers(4), 2)
	if err != nil {
		t.Fatal(err)
	}
	for aid, want := range map[int64]int{
		-5: 0, 1: 0, 50000: 0, 50001: 1, 100000: 1, 100001: 2, 150001: 3, 200000: 3, 1 << 40: 3,
	} {
		if got, err := s.ShardOf(aid); err != nil || got != want {
			t.Errorf("ShardOf(%d) = %d, %v; want %d", aid, got, err, want)
		}
	}
	pred, err := s.ownedPredicate("s1")
	if err != nil || pred != "(true AND aid >= 50001 AND aid < 100001)" {
		t.Errorf("predicate of s1: %q, %v", pred, err)
	}
}

func TestHashSetupSpreadsAids(t *testing.T) {
	s, err := NewSetup(shardmap.Hash, servers(4), 1)
	if err != nil {
		t.Fatal(err)
	}
	count := make([]int, 4)
	for aid := int64(1); aid <= s.Accounts(); aid++ {
		i, err := s.ShardOf(aid)
		if err != nil {
			t.Fatal(err)
		}
		count[i]++
	}
	for i, n := range count {
		if n < 24000 || n > 26000 {
			t.Errorf("shard %d owns %d of %d aids; want about a quarter", i, n, s.Accounts())
		}
	}
	pred, err := s.ownedPredicate("s0")
	want := "(true AND " + shardmap.KeyBigint.HashSQL("aid") + " < "
	if err != nil || !strings.HasPrefix(pred, want) {
		t.Errorf("predicate of s0: %q, %v; want it to start with %q", pred, err, want)
	}
}

func TestMapRoundTrips(t *testing.T) {
	for _, st := range []shardmap.Strategy{shardmap.Range, shardmap.Hash} {
		s, err := NewSetup(st, servers(3), 1)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.Map.YAML()
		if err != nil {
			t.Fatal(err)
		}
		m, err := shardmap.ParseYAML(b)
		if err != nil {
			t.Fatalf("%s: %v\n%s", st, err, b)
		}
		if err := m.Validate(); err != nil {
			t.Errorf("%s: %v", st, err)
		}
		if tb := m.Table(HistoryTable); tb == nil || tb.KeyColumn != KeyColumn || tb.Distribution != Distribution {
			t.Errorf("%s: history table %+v", st, tb)
		}
	}
}

func TestScripts(t *testing.T) {
	for _, name := range ScriptNames {
		text, err := Script(name)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(text, "random(1, "+strconv.Itoa(AccountsPerScale)+" * :scale)") {
			t.Errorf("%s: aids do not match AccountsPerScale:\n%s", name, text)
		}
		if tx := strings.Contains(text, "BEGIN;\n") && strings.HasSuffix(text, "END;\n"); tx != (name == Transaction) {
			t.Errorf("%s: transaction block %v:\n%s", name, tx, text)
		}
	}
	if _, err := Script("nope"); err == nil {
		t.Error("unknown script: no error")
	}
}

func TestParseOutput(t *testing.T) {
	const withT = `pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: /tmp/x/transaction.pgbench
scaling factor: 1
query mode: prepared
number of clients: 8
number of threads: 2
maximum number of tries: 1
number of transactions per client: 100
number of transactions actually processed: 797/800
number of failed transactions: 3 (0.375%)
latency average = 3.613 ms
initial connection time = 20.838 ms
tps = 2214.402301 (without initial connection time)
`
	o := ParseOutput(withT)
	if !o.HaveProcessed || !o.HaveFailed || !o.HaveLatency || !o.HaveTPS ||
		o.Processed != 797 || o.Planned != 800 || o.Failed != 3 || o.LatencyMs != 3.613 || o.TPS != 2214.402301 {
		t.Errorf("-t output: %+v", o)
	}
	withDuration := strings.Replace(withT, "797/800", "52011", 1)
	if o := ParseOutput(withDuration); o.Processed != 52011 || o.Planned != 0 {
		t.Errorf("-T output: processed %d, planned %d", o.Processed, o.Planned)
	}
	withC := strings.Replace(withDuration, "initial connection time = 20.838 ms\ntps = 2214.402301 (without initial connection time)",
		"average connection time = 5.284 ms\ntps = 374.241808 (including reconnection times)", 1)
	if o := ParseOutput(withC); !o.HaveTPS || o.TPS != 374.241808 {
		t.Errorf("-C output: %+v", o)
	}
	if o := ParseOutput("pgbench: error: connection to server failed\n"); o.HaveProcessed || o.HaveTPS || o.HaveFailed || o.HaveLatency {
		t.Errorf("no summary: %+v", o)
	}
}
