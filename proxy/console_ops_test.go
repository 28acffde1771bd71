package proxy_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/wire/auth"
)

const opsPassword = "ops-secret"

// withOps adds the admin console user "ops" to cfg.
func withOps(t *testing.T, cfg *proxy.Config) *proxy.Config {
	t.Helper()
	v, err := auth.NewSCRAMVerifier(opsPassword, nil, auth.DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Users = append(cfg.Users, proxy.UserConfig{Name: "ops", Password: v.String()})
	cfg.AdminUsers = []string{"ops"}
	return cfg
}

// consoleConn connects to p's admin console as ops.
func consoleConn(t *testing.T, p *testProxy) *pgx.Conn {
	return connect(t, "postgres://ops:"+opsPassword+"@"+p.addr+"/pgshard?sslmode=disable&default_query_exec_mode=simple_protocol")
}

// consoleRows runs a console command and returns its rows as text.
func consoleRows(t *testing.T, ctx context.Context, c *pgx.Conn, sql string) [][]string {
	t.Helper()
	rs, err := c.Query(ctx, sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	defer rs.Close()
	var out [][]string
	for rs.Next() {
		vals, err := rs.Values()
		if err != nil {
			t.Fatal(err)
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			row[i], _ = v.(string)
		}
		out = append(out, row)
	}
	if err := rs.Err(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}

// column returns the index of name in a console result's columns.
func column(t *testing.T, ctx context.Context, c *pgx.Conn, sql, name string) int {
	t.Helper()
	rs, err := c.Query(ctx, sql)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	for i, f := range rs.FieldDescriptions() {
		if f.Name == name {
			return i
		}
	}
	t.Fatalf("%s has no column %q", sql, name)
	return -1
}

// listValue returns one item of SHOW LISTS.
func listValue(t *testing.T, ctx context.Context, c *pgx.Conn, item string) string {
	t.Helper()
	for _, r := range consoleRows(t, ctx, c, "SHOW LISTS") {
		if r[0] == item {
			return r[1]
		}
	}
	t.Fatalf("SHOW LISTS has no %q", item)
	return ""
}

// eventually polls cond until it holds or ctx ends.
func eventually(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting until %s", what)
		case <-tick.C:
		}
	}
}

// serverPIDAlive reports whether the server still has backend pid.
func serverPIDAlive(t *testing.T, ctx context.Context, direct *pgx.Conn, pid uint32) bool {
	t.Helper()
	var n int
	if err := direct.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, int64(pid)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// TestConsoleShowVerbs: SHOW SERVERS lists the server connection a client
// uses (its server pid, active with the client's id inside a transaction,
// idle after it), SHOW USERS the users and their connections, SHOW
// DATABASES the shard, SHOW LISTS the counts.
func TestConsoleShowVerbs(t *testing.T) {
	pg := integration.StartPostgres(t)
	p := startProxy(t, withOps(t, baseConfig(t, pg)))
	ctx := ctxT(t)
	app := connect(t, p.dsn(""))
	console := consoleConn(t, p)

	tx, err := app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid int64
	if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	clientID := strconv.FormatUint(uint64(app.PgConn().PID()), 10)
	state := column(t, ctx, console, "SHOW SERVERS", "state")
	client := column(t, ctx, console, "SHOW SERVERS", "client_id")
	spid := column(t, ctx, console, "SHOW SERVERS", "server_pid")
	find := func() []string {
		for _, r := range consoleRows(t, ctx, console, "SHOW SERVERS") {
			if r[spid] == strconv.FormatInt(pid, 10) {
				return r
			}
		}
		return nil
	}
	if r := find(); r == nil || r[state] != "active" || r[client] != clientID || r[1] != "s0" || r[3] != "primary" {
		t.Errorf("SHOW SERVERS in a transaction: %q, want server pid %d active for client %s", r, pid, clientID)
	}
	// The client's id is the one SHOW CLIENTS shows.
	var sawID bool
	for _, r := range consoleRows(t, ctx, console, "SHOW CLIENTS") {
		sawID = sawID || r[0] == appUser && r[len(r)-1] == clientID
	}
	if !sawID {
		t.Errorf("SHOW CLIENTS has no id %s for %s", clientID, appUser)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "the server connection is idle", func() bool { r := find(); return r != nil && r[state] == "idle" && r[client] == "" })

	users := consoleRows(t, ctx, console, "SHOW USERS")
	var names []string
	for _, u := range users {
		names = append(names, u[0]+"/"+u[1]+"/"+u[5])
	}
	if !slices.Equal(names, []string{appUser + "/users/1", "ops/users/1"}) {
		t.Errorf("SHOW USERS: %q", users)
	}
	dbs := consoleRows(t, ctx, console, "SHOW DATABASES")
	if len(dbs) != 1 || dbs[0][0] != "s0" || dbs[0][1] != pg.Host || dbs[0][2] != strconv.Itoa(pg.Port) || dbs[0][6] != "1" || dbs[0][8] != "false" {
		t.Errorf("SHOW DATABASES: %q", dbs)
	}
	for item, want := range map[string]string{"clients": "2", "users": "2", "shards": "1", "pools": "1", "servers": "1", "servers_in_use": "0"} {
		if got := listValue(t, ctx, console, item); got != want {
			t.Errorf("SHOW LISTS %s = %s, want %s", item, got, want)
		}
	}
	var cmds []string
	for _, r := range consoleRows(t, ctx, console, "SHOW HELP") {
		cmds = append(cmds, r[0])
	}
	for _, want := range []string{"SHOW SERVERS", "PAUSE [shard]", "RESUME [shard]", "RECONNECT [shard]", "KILL client_id", "RELOAD", "SHUTDOWN"} {
		if !slices.Contains(cmds, want) {
			t.Errorf("SHOW HELP lacks %q: %q", want, cmds)
		}
	}
}

// TestConsolePauseResume: PAUSE waits for the open transaction to end,
// then closes the idle server connections (the server sees no client
// session of the proxy); a new transaction is held, not refused, until
// RESUME, and then runs; PAUSE of an unknown shard is refused (22023).
func TestConsolePauseResume(t *testing.T) {
	pg := integration.StartPostgres(t)
	p := startProxy(t, withOps(t, baseConfig(t, pg)))
	ctx := ctxT(t)
	direct := connect(t, pg.SuperDSN("postgres"))
	console := consoleConn(t, p)
	busy := connect(t, p.dsn(""))
	later := connect(t, p.dsn(""))
	if _, err := later.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	tx, err := busy.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}

	paused := make(chan error, 1)
	go func() { _, err := console.Exec(context.Background(), "PAUSE s0"); paused <- err }()
	// While the transaction is open, PAUSE has not returned; the
	// transaction's statements still run.
	if _, err := tx.Exec(ctx, "SELECT 2"); err != nil {
		t.Fatalf("a statement of an open transaction during PAUSE: %v", err)
	}
	select {
	case err := <-paused:
		t.Fatalf("PAUSE returned (%v) while a transaction held a server connection", err)
	default:
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-paused:
		if err != nil {
			t.Fatalf("PAUSE: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("PAUSE did not return after the transaction ended")
	}
	eventually(t, ctx, "the proxy has no server session", func() bool { return clientBackends(t, ctx, direct) == 0 })

	// A new transaction waits.
	held := make(chan error, 1)
	go func() {
		var v int
		err := later.QueryRow(ctx, "SELECT 42").Scan(&v)
		if err == nil && v != 42 {
			err = errors.New("wrong answer " + strconv.Itoa(v))
		}
		held <- err
	}()
	console2 := consoleConn(t, p)
	eventually(t, ctx, "SHOW LISTS counts the held statement", func() bool { return listValue(t, ctx, console2, "held_by_pause") == "1" })
	if dbs := consoleRows(t, ctx, console2, "SHOW DATABASES"); dbs[0][8] != "true" {
		t.Errorf("SHOW DATABASES while paused: %q", dbs)
	}
	select {
	case err := <-held:
		t.Fatalf("a statement ran while its shard was paused: %v", err)
	default:
	}
	if _, err := console2.Exec(ctx, "RESUME s0"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-held:
		if err != nil {
			t.Fatalf("the held statement after RESUME: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the held statement did not run after RESUME")
	}
	if _, err := console2.Exec(ctx, "PAUSE nosuch"); pgCode(err) != "22023" {
		t.Errorf("PAUSE of an unknown shard: %v, want 22023", err)
	}
	// PAUSE of all shards and RESUME without a name.
	if _, err := console2.Exec(ctx, "PAUSE"); err != nil {
		t.Fatal(err)
	}
	if got := listValue(t, ctx, console2, "paused_shards"); got != "*" {
		t.Errorf("paused_shards after PAUSE: %q", got)
	}
	if _, err := console2.Exec(ctx, "RESUME"); err != nil {
		t.Fatal(err)
	}
	if _, err := later.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("after RESUME: %v", err)
	}
}

// TestConsoleReconnect: RECONNECT closes an idle server connection at
// once and a busy one when its transaction returns it; clients go on with
// new server connections.
func TestConsoleReconnect(t *testing.T) {
	pg := integration.StartPostgres(t)
	p := startProxy(t, withOps(t, baseConfig(t, pg)))
	ctx := ctxT(t)
	direct := connect(t, pg.SuperDSN("postgres"))
	console := consoleConn(t, p)
	app := connect(t, p.dsn(""))
	backendPID := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) uint32 {
		var pid int64
		if err := q.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		return uint32(pid)
	}
	idle := backendPID(app)
	if _, err := console.Exec(ctx, "RECONNECT s0"); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "the idle server connection is closed", func() bool { return !serverPIDAlive(t, ctx, direct, idle) })
	tx, err := app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	busy := backendPID(tx)
	if busy == idle {
		t.Fatalf("server pid %d after RECONNECT is the old one", busy)
	}
	if _, err := console.Exec(ctx, "RECONNECT"); err != nil {
		t.Fatal(err)
	}
	if !serverPIDAlive(t, ctx, direct, busy) {
		t.Fatal("RECONNECT closed a server connection in use")
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("the transaction after RECONNECT: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "the returned server connection is closed", func() bool { return !serverPIDAlive(t, ctx, direct, busy) })
	if again := backendPID(app); again == busy || again == idle {
		t.Errorf("server pid %d after RECONNECT is an old one", again)
	}
}

// TestConsoleKill: KILL ends the client with the id SHOW CLIENTS shows
// (57P01, as pg_terminate_backend); an unknown id is 22023, a malformed
// one 42601.
func TestConsoleKill(t *testing.T) {
	pg := integration.StartPostgres(t)
	p := startProxy(t, withOps(t, baseConfig(t, pg)))
	ctx := ctxT(t)
	console := consoleConn(t, p)
	victim := connect(t, p.dsn(""))
	other := connect(t, p.dsn(""))
	if _, err := victim.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	id := victim.PgConn().PID()
	if _, err := console.Exec(ctx, "KILL "+strconv.FormatUint(uint64(id), 10)); err != nil {
		t.Fatal(err)
	}
	_, err := victim.Exec(ctx, "SELECT 1")
	if err == nil {
		t.Fatal("the killed client still runs statements")
	}
	if c := pgCode(err); c != "57P01" && !victim.IsClosed() {
		t.Errorf("the killed client's next statement: %v, want 57P01 or a closed connection", err)
	}
	eventually(t, ctx, "SHOW CLIENTS no longer lists the killed client", func() bool {
		for _, r := range consoleRows(t, ctx, console, "SHOW CLIENTS") {
			if r[len(r)-1] == strconv.FormatUint(uint64(id), 10) {
				return false
			}
		}
		return true
	})
	if _, err := other.Exec(ctx, "SELECT 1"); err != nil {
		t.Errorf("another client after KILL: %v", err)
	}
	if _, err := console.Exec(ctx, "KILL 1"); pgCode(err) != "22023" {
		t.Errorf("KILL of an unknown id: %v, want 22023", err)
	}
	if _, err := console.Exec(ctx, "KILL me"); pgCode(err) != "42601" {
		t.Errorf("KILL with a malformed id: %v, want 42601", err)
	}
}

// TestConsoleReloadShutdown: RELOAD applies the configuration ReloadFunc
// loads (a new user gets in) and refuses a broken one (F0000) keeping
// the old; SHUTDOWN answers, then ends idle clients with 57P01 and
// refuses new ones.
func TestConsoleReloadShutdown(t *testing.T) {
	pg := integration.StartPostgres(t)
	cfg := withOps(t, baseConfig(t, pg))
	v, err := auth.NewSCRAMVerifier("new-secret", nil, auth.DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	var broken atomic.Bool
	cfg.ReloadFunc = func() (*proxy.Config, error) {
		if broken.Load() {
			return nil, errors.New("line 3: invalid duration")
		}
		next := withOps(t, baseConfig(t, pg)) // the same listen address, 127.0.0.1:0
		next.Users = append(next.Users, proxy.UserConfig{Name: "newbie", Password: v.String()})
		return next, next.Complete()
	}
	p := startProxy(t, cfg)
	ctx := ctxT(t)
	console := consoleConn(t, p)
	newbie := "postgres://newbie:new-secret@" + p.addr + "/postgres?sslmode=disable"
	if err := tryConnect(newbie); pgCode(err) != "28P01" {
		t.Fatalf("an unknown user before RELOAD: %v, want 28P01", err)
	}
	if _, err := console.Exec(ctx, "RELOAD"); err != nil {
		t.Fatal(err)
	}
	if err := tryConnect(newbie); err != nil {
		t.Fatalf("the user added by RELOAD: %v", err)
	}
	broken.Store(true)
	_, err = console.Exec(ctx, "RELOAD")
	if pgCode(err) != "F0000" || !strings.Contains(err.Error(), "invalid duration") {
		t.Fatalf("RELOAD of a broken configuration: %v, want F0000 saying why", err)
	}
	if err := tryConnect(newbie); err != nil {
		t.Fatalf("after a failed RELOAD the configuration changed: %v", err)
	}

	idle := connect(t, p.dsn(""))
	if _, err := idle.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := console.Exec(ctx, "SHUTDOWN"); err != nil {
		t.Fatalf("SHUTDOWN: %v", err)
	}
	p.srv.WaitShutdown()
	if _, err := idle.Exec(ctx, "SELECT 1"); err == nil || pgCode(err) != "57P01" && !idle.IsClosed() {
		t.Errorf("an idle client after SHUTDOWN: %v, want 57P01", err)
	}
	if err := tryConnect(p.dsn("")); err == nil {
		t.Error("a new client got in after SHUTDOWN")
	}
}

// TestConsolePsql drives the console with psql, as an operator would.
func TestConsolePsql(t *testing.T) {
	pg := integration.StartPostgres(t)
	p := startProxy(t, withOps(t, baseConfig(t, pg)))
	ctx := ctxT(t)
	app := connect(t, p.dsn(""))
	if _, err := app.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	psql := func(cmd string) string {
		t.Helper()
		c := exec.CommandContext(ctx, "/usr/lib/postgresql/15/bin/psql", "-X", "-A", "-F", "|", "-v", "ON_ERROR_STOP=1",
			"-h", "127.0.0.1", "-p", port(p.addr), "-U", "ops", "-d", "pgshard", "-c", cmd)
		c.Env = append(os.Environ(), "PGPASSWORD="+opsPassword, "PGSSLMODE=disable")
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("psql -c %q: %v\n%s", cmd, err, out)
		}
		return string(out)
	}
	if out := psql("SHOW DATABASES"); !strings.Contains(out, "name|host|port|database|") || !strings.Contains(out, "s0|"+pg.Host+"|"+strconv.Itoa(pg.Port)+"|") {
		t.Errorf("psql SHOW DATABASES:\n%s", out)
	}
	if out := psql("SHOW USERS"); !strings.Contains(out, appUser+"|users|scram-sha-256|transaction|") {
		t.Errorf("psql SHOW USERS:\n%s", out)
	}
	if out := psql("SHOW SERVERS"); !strings.Contains(out, "S|s0|"+pg.Addr()+"|primary|") {
		t.Errorf("psql SHOW SERVERS:\n%s", out)
	}
	if out := psql("PAUSE"); !strings.Contains(out, "PAUSE") {
		t.Errorf("psql PAUSE:\n%s", out)
	}
	if out := psql("SHOW LISTS"); !strings.Contains(out, "paused_shards|*") {
		t.Errorf("psql SHOW LISTS while paused:\n%s", out)
	}
	if out := psql("RESUME"); !strings.Contains(out, "RESUME") {
		t.Errorf("psql RESUME:\n%s", out)
	}
	if _, err := app.Exec(ctx, "SELECT 1"); err != nil {
		t.Errorf("after RESUME: %v", err)
	}
}
