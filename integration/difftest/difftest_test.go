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

// loadCorpus reads testdata/corpus.sql and checks it is as large as the
// sharding issue asks.
func loadCorpus(t *testing.T) []difftest.Query {
	t.Helper()
	corpus, err := difftest.LoadCorpus("testdata/corpus.sql")
	if err != nil {
		t.Fatal(err)
	}
	if len(corpus) < 150 {
		t.Fatalf("corpus has only %d statements", len(corpus))
	}
	return corpus
}

// TestSingleShardMatchesReference loads the dataset into a reference
// server and, through pgshard without a shard map, into a second one, and
// runs the corpus on both in every mode: every answer must be identical,
// refusals the corpus expects over a shard map included.
func TestSingleShardMatchesReference(t *testing.T) {
	corpus := loadCorpus(t)
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
		if err := difftest.Load(ctx, c, difftest.DefaultSize, seed); err != nil {
			t.Fatal(err)
		}
	}
	r := difftest.Runner{Ref: refConn, Proxy: proxyConn, Logf: t.Logf}
	rep, err := r.Run(ctx, corpus)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("one shard: %s", rep)
	for _, f := range rep.Failures {
		t.Error(f)
	}
	if rep.Statements[difftest.Identical] != len(corpus) {
		t.Errorf("%d of %d statements answered identically", rep.Statements[difftest.Identical], len(corpus))
	}
}
