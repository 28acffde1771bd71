package difftest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/difftest"
	"github.com/pgshard/pgshard/integration/testproxy"
)

func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaks(m)) }

// TestSingleShardMatchesReference loads the dataset into a reference
// server and, through pgshard, into a second one, and runs the corpus on
// both, in the simple and the extended protocol.
func TestSingleShardMatchesReference(t *testing.T) {
	ref := integration.StartPostgres(t, integration.Name("reference"))
	shard := integration.StartPostgres(t, integration.Name("shard"))
	p := testproxy.Start(t, testproxy.Config(t, shard))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	refConn, err := pgx.Connect(ctx, ref.SuperDSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer refConn.Close(ctx)
	proxyConn, err := pgx.Connect(ctx, p.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer proxyConn.Close(ctx)
	for _, c := range []*pgx.Conn{refConn, proxyConn} {
		if err := difftest.Load(ctx, c, difftest.DefaultSize, 42); err != nil {
			t.Fatal(err)
		}
	}
	corpus, err := difftest.LoadCorpus("testdata/corpus.sql")
	if err != nil {
		t.Fatal(err)
	}
	if len(corpus) < 60 {
		t.Fatalf("corpus has only %d statements", len(corpus))
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		for _, q := range corpus {
			if q.Write && mode != pgx.QueryExecModeSimpleProtocol {
				continue // writes run once
			}
			want, err := difftest.Run(ctx, refConn, q.SQL, mode)
			if err != nil {
				t.Fatalf("line %d on the reference: %v", q.Line, err)
			}
			got, err := difftest.Run(ctx, proxyConn, q.SQL, mode)
			if err != nil {
				t.Fatalf("line %d through pgshard: %v", q.Line, err)
			}
			if d := difftest.Diff(q, want, got); d != "" {
				t.Errorf("corpus line %d (%v): %s\n%s", q.Line, mode, d, q.SQL)
			}
		}
	}
}
