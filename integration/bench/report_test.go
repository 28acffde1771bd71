package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/integration/shardbench"
)

func TestWriteReportReplacesOnlyItsSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "benchmarks.md")
	old := "# Benchmarks\n\nintro\n\n" +
		beginMarker + "\nold select-only\n" + endMarker + "\n\n## Analysis\n\nnotes\n\n" +
		shardedBeginMarker + "\nold sharded\n" + shardedEndMarker + "\n\nmore notes\n"
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeReport(path, shardedBeginMarker, shardedEndMarker, shardedBeginMarker+"\nnew sharded\n"+shardedEndMarker+"\n"); err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(old, "old sharded", "new sharded", 1)
	if got := readFile(path); got != want {
		t.Errorf("after the sharded section:\n%s\nwant:\n%s", got, want)
	}
	if err := writeReport(path, beginMarker, endMarker, beginMarker+"\nnew select-only\n"+endMarker+"\n"); err != nil {
		t.Fatal(err)
	}
	want = strings.Replace(want, "old select-only", "new select-only", 1)
	if got := readFile(path); got != want {
		t.Errorf("after the select-only section:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteReportAppendsMissingSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "benchmarks.md")
	old := "# Benchmarks\n\n" + beginMarker + "\nselect-only\n" + endMarker + "\n\nnotes"
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	section := shardedBeginMarker + "\nsharded\n" + shardedEndMarker + "\n"
	if err := writeReport(path, shardedBeginMarker, shardedEndMarker, section); err != nil {
		t.Fatal(err)
	}
	if got, want := readFile(path), old+"\n\n"+section; got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestShardedReport(t *testing.T) {
	o, err := parseFlags([]string{"-sharded-only", "-modes", "simple", "-scripts", "transaction"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	ok := func(target string, tps float64, cpu float64) result {
		return result{script: "transaction", mode: "simple", target: target, cpuSeconds: cpu, haveCPU: cpu > 0,
			pgbench: pgbenchResult{ok: true, tps: tps, haveTPS: true, processed: 1000, haveFailed: true}}
	}
	failed := result{script: "transaction", mode: "simple", target: targetManyShards, note: "8 of 8 clients aborted",
		pgbench: pgbenchResult{aborted: 8, processed: 3, haveTPS: true, tps: 10, errors: []string{"pgbench: error: boom"}}}
	results := []result{ok(targetDirect, 2000, 0), ok(targetOneShard, 1000, 0.02), failed}
	checks := []shardedCheck{{name: "4 shards", totals: shardbench.Totals{Accounts: 100, History: 5, Balance: 7, Delta: 7}}}
	out := renderShardedReport(environment{date: time.Unix(0, 0).UTC(), nproc: 2}, o, results, checks)
	for _, want := range []string{
		shardedBeginMarker, shardedEndMarker,
		"| simple | direct | 2000 |",
		"| simple | pgshard, 1 shard | 1000 | — | 0 | 20.0 | 0.50× | 1.00× | 1.00× | ok |",
		"| simple | **pgshard, 4 shards** | 10 |",
		"**failed**: 8 of 8 clients aborted",
		"`pgbench: error: boom`",
		"cannot scale anything out",
		"| 4 shards | 100 | 5 | 7 | 7 | ok |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
