package proxy_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap/shardmaptest"
)

// pipeStep is one request of a pipeline: an unnamed statement run with
// its parameters, then Sync.
type pipeStep struct {
	sql     string
	params  []string
	maxRows uint32
}

// sendPipeline sends every step (Parse, Bind, Describe portal, Execute,
// Sync) in one write.
func sendPipeline(t *testing.T, fe *pgproto3.Frontend, steps []pipeStep) {
	t.Helper()
	for _, st := range steps {
		var params [][]byte
		for _, p := range st.params {
			params = append(params, []byte(p))
		}
		fe.SendParse(&pgproto3.Parse{Query: st.sql})
		fe.SendBind(&pgproto3.Bind{Parameters: params})
		fe.SendDescribe(&pgproto3.Describe{ObjectType: 'P'})
		fe.SendExecute(&pgproto3.Execute{MaxRows: st.maxRows})
		fe.SendSync(&pgproto3.Sync{})
	}
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
}

// pipeAnswer is what one request got: its CommandComplete tag, its rows'
// first column, and its error's SQLSTATE and message.
type pipeAnswer struct {
	tag, code, msg string
	rows           []string
}

// readPipeline reads n requests' answers, in order, up to each one's
// ReadyForQuery.
func readPipeline(t *testing.T, fe *pgproto3.Frontend, n int) []pipeAnswer {
	t.Helper()
	out := make([]pipeAnswer, n)
	for i := 0; i < n; {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		switch m := m.(type) {
		case *pgproto3.CommandComplete:
			out[i].tag = string(m.CommandTag)
		case *pgproto3.DataRow:
			out[i].rows = append(out[i].rows, string(m.Values[0]))
		case *pgproto3.ErrorResponse:
			out[i].code, out[i].msg = m.Code, m.Message
		case *pgproto3.ReadyForQuery:
			if m.TxStatus != 'I' {
				t.Fatalf("answer %d: transaction status %c", i, m.TxStatus)
			}
			i++
		}
	}
	return out
}

// onePerShard gives each shard's pool a single server connection: the
// previous request's connection cannot be borrowed twice.
func onePerShard(cfg *proxy.Config) { cfg.Pool.Size = 1 }

// TestPipelineRequestsRoutedOnTheirOwn: requests separated by Sync are
// independent, whatever the previous request's server connection still
// owes: a pipeline of autocommit statements alternating between shards
// runs each on its shard, answered in request order, with no refusal.
func TestPipelineRequestsRoutedOnTheirOwn(t *testing.T) {
	p, direct, _ := kvShardsTr(t, onePerShard)
	conn, fe := trustedSession(t, p.addr)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))

	// A write on s0, a write on s1, a read on s0 of the first write.
	ins := `INSERT INTO kv (k, v) VALUES ($1, $2)`
	sendPipeline(t, fe, []pipeStep{
		{sql: ins, params: []string{"5", "a"}},
		{sql: ins, params: []string{"150", "b"}},
		{sql: `SELECT v FROM kv WHERE k = $1`, params: []string{"5"}},
		{sql: `SELECT v FROM kv WHERE k = $1`, params: []string{"150"}},
	})
	got := readPipeline(t, fe, 4)
	for i, a := range got[:2] {
		if a.code != "" || a.tag != "INSERT 0 1" {
			t.Fatalf("request %d: tag %q error %s %s", i, a.tag, a.code, a.msg)
		}
	}
	for i, want := range []string{"a", "b"} {
		a := got[2+i]
		if a.code != "" || a.tag != "SELECT 1" || len(a.rows) != 1 || a.rows[0] != want {
			t.Fatalf("read %d: %+v", i, a)
		}
	}
	if !rowOn(t, direct[0], 5) || rowOn(t, direct[1], 5) || !rowOn(t, direct[1], 150) || rowOn(t, direct[0], 150) {
		t.Fatal("rows are not on their shards")
	}

	// A request for another shard whose Parse fails gets the server's
	// error, in order, and the next request runs.
	sendPipeline(t, fe, []pipeStep{
		{sql: ins, params: []string{"6", "c"}},
		{sql: `SELECT nosuchcol FROM kv WHERE k = $1`, params: []string{"160"}},
		{sql: ins, params: []string{"160", "d"}},
	})
	got = readPipeline(t, fe, 3)
	if got[0].tag != "INSERT 0 1" || got[1].code != "42703" || got[2].tag != "INSERT 0 1" || got[0].code+got[2].code != "" {
		t.Fatalf("answers %+v", got)
	}
	if !rowOn(t, direct[0], 6) || !rowOn(t, direct[1], 160) {
		t.Fatal("rows 6 and 160 are not on their shards")
	}

	// 200 autocommit INSERTs alternating between the shards, each with
	// its own Sync, in one pipeline: zero refusals.
	const n = 200
	steps := make([]pipeStep, n)
	for i := range steps {
		k := 1000 + i // s1
		if i%2 == 0 {
			k = -1 - i // s0
		}
		steps[i] = pipeStep{sql: ins, params: []string{strconv.Itoa(k), fmt.Sprint(i)}}
	}
	sendPipeline(t, fe, steps)
	for i, a := range readPipeline(t, fe, n) {
		if a.code != "" || a.tag != "INSERT 0 1" {
			t.Fatalf("request %d: tag %q error %s %s", i, a.tag, a.code, a.msg)
		}
	}
	for i, want := range []int{n / 2, n / 2} {
		var c int
		q := `SELECT count(*) FROM kv WHERE k < 0`
		if i == 1 {
			q = `SELECT count(*) FROM kv WHERE k >= 1000`
		}
		if err := direct[i].QueryRow(ctxT(t), q).Scan(&c); err != nil || c != want {
			t.Fatalf("s%d: %d rows (%v), want %d", i, c, err, want)
		}
	}
}

// TestRowLimitOnWritesOverShards: pgjdbc executes updates with a row
// limit of 1. A statement over several shards that returns no rows (a
// split INSERT or a broadcast UPDATE without RETURNING) runs whole, as on
// PostgreSQL, where the limit has no effect on it; a read over several
// shards with fewer rows than the limit is answered whole; a RETURNING
// write, whose rows would have to come in parts, is still refused before
// it runs.
func TestRowLimitOnWritesOverShards(t *testing.T) {
	p, direct, _ := kvShardsTr(t, func(cfg *proxy.Config) { cfg.BroadcastWrites = "allow" })
	conn, fe := trustedSession(t, p.addr)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))

	sendPipeline(t, fe, []pipeStep{
		{sql: `INSERT INTO kv (k, v) VALUES ($1, 'a'), ($2, 'b')`, params: []string{"7", "170"}, maxRows: 1},
		{sql: `UPDATE kv SET v = v || '!'`, maxRows: 1},
		{sql: `SELECT count(*) FROM kv`, maxRows: 2},
		{sql: `SELECT v FROM kv ORDER BY k`, maxRows: 3},
		{sql: `INSERT INTO kv (k, v) VALUES ($1, 'c'), ($2, 'd') RETURNING k`, params: []string{"8", "180"}, maxRows: 1},
		{sql: `SELECT v FROM kv ORDER BY k`, maxRows: 2},
	})
	got := readPipeline(t, fe, 6)
	for i, want := range []pipeAnswer{
		{tag: "INSERT 0 2"},
		{tag: "UPDATE 2"},
		{tag: "SELECT 1", rows: []string{"2"}},
		{tag: "SELECT 2", rows: []string{"a!", "b!"}},
	} {
		if a := got[i]; a.code != "" || a.tag != want.tag || fmt.Sprint(a.rows) != fmt.Sprint(want.rows) {
			t.Fatalf("request %d: %+v, want %+v", i, a, want)
		}
	}
	for i, a := range got[4:] {
		if a.code != "0A000" {
			t.Fatalf("request %d with rows over the limit: %+v, want 0A000", 4+i, a)
		}
	}
	if !rowOn(t, direct[0], 7) || !rowOn(t, direct[1], 170) || rowOn(t, direct[0], 8) || rowOn(t, direct[1], 180) {
		t.Fatal("rows are not where they belong")
	}
}

// TestPipelineRequestsWithReadYourWrites: with replicas and
// read-your-writes, each write's hidden WAL position query is still in
// flight on its shard's connection when the next request, for the other
// shard, arrives: it is routed on its own all the same, and every read
// sees the writes before it.
func TestPipelineRequestsWithReadYourWrites(t *testing.T) {
	c := integration.NewCluster(t, integration.Shards(2), integration.Replicas(1))
	ctx := ctxT(t)
	for _, srv := range c.Shards {
		if err := srv.Exec(ctx, `CREATE TABLE kv (k bigint PRIMARY KEY, v text)`); err != nil {
			t.Fatal(err)
		}
		if err := srv.WaitReplayed(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cfg := mapConfig(t, c.Shards[0], shardmaptest.New().
		Shard("s0", c.Shards[0].Addr(), c.Shards[0].Replicas[0].Addr()).
		Shard("s1", c.Shards[1].Addr(), c.Shards[1].Replicas[0].Addr()).
		Range("kv", 100).Table("public.kv", "k").YAML(t))
	cfg.Users = append(cfg.Users, proxy.UserConfig{Name: "tr", Auth: "trust"})
	cfg.HealthInterval = proxy.Duration(20 * time.Millisecond)
	cfg.Pool.Size = 1
	p := startProxy(t, cfg)
	waitFor(t, func() bool {
		n := 0
		for _, st := range p.srv.Health() {
			if st.Role == "replica" && st.Up && st.InRecovery && st.LagKnown {
				n++
			}
		}
		return n == 2
	})
	conn, fe := trustedSession(t, p.addr)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	// Write on one shard, read the other shard's latest write, alternating.
	const n = 60
	key := func(i int) int {
		if i%2 == 0 {
			return 1 + i/2 // s0
		}
		return 1000 + i // s1
	}
	var steps []pipeStep
	for i := 0; i < n; i++ {
		steps = append(steps, pipeStep{sql: `INSERT INTO kv (k, v) VALUES ($1, $2)`, params: []string{strconv.Itoa(key(i)), fmt.Sprint(i)}})
		if i > 0 {
			steps = append(steps, pipeStep{sql: `SELECT v FROM kv WHERE k = $1`, params: []string{strconv.Itoa(key(i - 1))}})
		}
	}
	sendPipeline(t, fe, steps)
	got := readPipeline(t, fe, len(steps))
	for j, a := range got {
		// Requests: INSERT 0, then INSERT i and a read of write i-1.
		read := j > 0 && j%2 == 0
		switch {
		case a.code != "":
			t.Fatalf("request %d: error %s %s", j, a.code, a.msg)
		case !read && a.tag != "INSERT 0 1":
			t.Fatalf("request %d: tag %q", j, a.tag)
		case read && (len(a.rows) != 1 || a.rows[0] != fmt.Sprint(j/2-1)):
			t.Fatalf("request %d: read of the write before it: %v", j, a.rows)
		}
	}
}
