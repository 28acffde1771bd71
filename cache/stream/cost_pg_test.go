package stream_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/cache"
	"github.com/pgshard/pgshard/cache/stream"
	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/testutil"
)

// BenchmarkDecodingCost measures what one reader costs its shard primary:
// the walsender's CPU per row change, for a table in the publication and
// for one outside it (every walsender decodes all the WAL, publication or
// not). Each proxy reading each shard pays this once per proxy.
//
//	go test -run '^$' -bench DecodingCost ./cache/stream/
func BenchmarkDecodingCost(b *testing.B) {
	srv := integration.StartPostgres(b, integration.Settings(map[string]string{"synchronous_commit": "on"}))
	ctx := context.Background()
	db, err := pgx.Connect(ctx, srv.SuperDSN("postgres"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close(ctx)
	const rows = 10000
	for _, sql := range []string{
		"CREATE TABLE users (id bigint PRIMARY KEY, name text)",
		"CREATE TABLE other (id bigint PRIMARY KEY, name text)",
		fmt.Sprintf("INSERT INTO users SELECT g, 'user' || g FROM generate_series(1, %d) g", rows),
		fmt.Sprintf("INSERT INTO other SELECT g, 'other' || g FROM generate_series(1, %d) g", rows),
	} {
		if _, err := db.Exec(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
	c, err := cache.New(cache.Config{MaxBytes: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	r, err := stream.New(stream.Config{ConnString: srv.SuperDSN("postgres"), Tables: map[string]string{"public.users": "id"}}, c.Stream("s1"))
	if err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	defer func() { cancel(); <-done }()
	testutil.Until(b, 10*time.Second, "the stream is up", func() bool { return r.Slot() != "" })
	var pid int
	if err := db.QueryRow(ctx, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", r.Slot()).Scan(&pid); err != nil {
		b.Fatal(err)
	}
	lsn := func() cache.LSN {
		var s string
		if err := db.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
			b.Fatal(err)
		}
		var hi, lo uint32
		fmt.Sscanf(s, "%X/%X", &hi, &lo)
		return cache.LSN(uint64(hi)<<32 | uint64(lo))
	}
	for _, table := range []string{"users", "other"} {
		b.Run(table, func(b *testing.B) {
			changes := 0
			cpu0 := cpuTime(b, pid)
			for b.Loop() {
				if _, err := db.Exec(ctx, "UPDATE "+table+" SET name = name || 'x'"); err != nil {
					b.Fatal(err)
				}
				changes += rows
				end := lsn()
				testutil.Until(b, time.Minute, "the stream decodes the update", func() bool { return c.Stream("s1").Applied() >= end })
			}
			b.ReportMetric(float64(cpuTime(b, pid)-cpu0)/float64(changes)/1e3, "walsender-µs/change")
		})
	}
}

// cpuTime returns the user+system CPU time of process pid.
func cpuTime(tb testing.TB, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command (which may hold spaces) start at ") ".
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	const ticks = 100                           // USER_HZ
	return time.Duration(utime+stime) * time.Second / ticks
}
