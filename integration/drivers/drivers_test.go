package drivers_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/integration/difftest"
	"github.com/pgshard/pgshard/integration/testproxy"
	"github.com/pgshard/pgshard/internal/testutil"
	"github.com/pgshard/pgshard/proxy"
	"github.com/pgshard/pgshard/shardmap"
)

func TestMain(m *testing.M) { os.Exit(integration.VerifyNoLeaks(m)) }

// split is the range map's only bound: users below it (and their orders)
// live on s0, the others on s1. A program's keys are base+i on s0 and
// split+base+i on s1.
const split = 1_000_000

// keySpan is how many keys a program may use from its base on each side.
const keySpan = 10_000

// minStatements is how many statements each program must run (and have
// answered without a refusal) at least.
const minStatements = 1000

// runTimeout bounds one program's run; the three together take a few
// seconds.
const runTimeout = 2 * time.Minute

// driver is one program and how to run it.
type driver struct {
	name string
	base int64
	// prepare finds the runtime and builds the program; it returns the
	// command (without environment) or why it cannot run.
	prepare func(t *testing.T, dir string) (*exec.Cmd, error)
	// parkWaits is how many times the program waits for its idle
	// connections to be parked (WAIT PARKED).
	parkWaits int
	// check makes driver-specific assertions on the shards after the run.
	check func(t *testing.T, ctx context.Context, direct []*pgx.Conn, base int64)
}

// TestDrivers runs psycopg2, node-postgres and pgjdbc programs against
// one sharded pgshard (two shards, a range map, transaction pooling). Each
// program asserts the answers it gets itself and exits non-zero on the
// first unexpected one; it prints how many statements it ran, how many
// were refused and which rows it left. The test then reads every shard's
// primary directly: each row must sit on the shard the map names, both
// shards must hold some, and the counts must be the program's. The pgjdbc
// program also leaves connections with server-prepared statements idle
// until the proxy has parked them, twice, beside a connection inside a
// transaction (which must not park), and checks every answer after.
//
// A runtime that is missing skips its program with how to install it;
// with CI=true it fails the test.
func TestDrivers(t *testing.T) {
	drivers := []driver{
		{name: "psycopg", base: 100_000, prepare: preparePsycopg},
		{name: "nodepg", base: 200_000, prepare: prepareNodePG},
		{name: "jdbc", base: 300_000, prepare: prepareJDBC, check: checkJDBCMigration, parkWaits: 2},
	}
	cmds := make(map[string]*exec.Cmd, len(drivers))
	missing := make(map[string]error, len(drivers))
	for _, d := range drivers {
		cmd, err := d.prepare(t, t.TempDir())
		if err != nil {
			missing[d.name] = err
			continue
		}
		cmds[d.name] = cmd
	}
	if len(cmds) == 0 {
		for _, d := range drivers {
			runtimeMissing(t, d.name, missing[d.name])
		}
		return
	}

	cl := integration.NewCluster(t, integration.Shards(2))
	var addrs []string
	for _, s := range cl.Shards {
		addrs = append(addrs, s.Addr())
	}
	mapText, err := difftest.MapYAML(addrs, "range", []int64{split})
	if err != nil {
		t.Fatal(err)
	}
	mapPath := filepath.Join(t.TempDir(), "map.yaml")
	if err := os.WriteFile(mapPath, []byte(mapText), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := shardmap.ParseYAML([]byte(mapText))
	if err != nil {
		t.Fatal(err)
	}
	dist := m.Distribution("users")
	cfg := testproxy.Config(t, cl.Shards[0])
	cfg.Shards = nil
	cfg.ShardMapFile = mapPath
	cfg.PoolMode = proxy.PoolTransaction
	p := testproxy.Start(t, cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	setup := connect(t, ctx, p.DSN(""))
	for _, ddl := range []string{
		"CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, note text)",
		"CREATE TABLE orders (user_id bigint NOT NULL, n int NOT NULL, amount numeric(12,2) NOT NULL, PRIMARY KEY (user_id, n))",
	} {
		if _, err := setup.Exec(ctx, ddl); err != nil {
			t.Fatalf("%s: %v", ddl, err)
		}
	}
	// Closed now, so that the only clients the proxy parks while a program
	// waits are the program's (parkedExactly).
	if err := setup.Close(ctx); err != nil {
		t.Fatal(err)
	}
	direct := make([]*pgx.Conn, len(cl.Shards))
	for i, s := range cl.Shards {
		direct[i] = connect(t, ctx, s.SuperDSN("postgres"))
	}

	host, port, err := net.SplitHostPort(p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	// Transaction pooling only: with a map, session pooling keeps a client
	// on the shard of its first statement (README, Compatibility), and
	// each program uses both shards on one connection.
	for _, d := range drivers {
		t.Run("transaction/"+d.name, func(t *testing.T) {
			cmd := cmds[d.name]
			if cmd == nil {
				runtimeMissing(t, d.name, missing[d.name])
				return
			}
			ctx, cancel := context.WithTimeout(ctx, runTimeout)
			defer cancel()
			base := d.base
			res := run(t, ctx, cmd, []string{
				"PGHOST=" + host, "PGPORT=" + port, "PGDATABASE=postgres",
				"PGUSER=" + testproxy.User, "PGPASSWORD=" + testproxy.Password, "PGSSLMODE=disable",
				"DRV_BASE=" + strconv.FormatInt(base, 10), "DRV_SPLIT=" + strconv.Itoa(split),
			}, parkedExactly(p))
			if res.statements < minStatements {
				t.Errorf("%s ran %d statements, want at least %d", d.name, res.statements, minStatements)
			}
			if res.parkWaits != d.parkWaits {
				t.Errorf("%s waited %d times for its idle connections to park, want %d", d.name, res.parkWaits, d.parkWaits)
			}
			if res.refusals != 0 {
				t.Errorf("%s: %d of %d statements were refused", d.name, res.refusals, res.statements)
			}
			if res.rows == 0 {
				t.Errorf("%s counted no rows coming back", d.name)
			}
			checkPlacement(t, ctx, direct, dist, "users", "id", base, res.users)
			checkPlacement(t, ctx, direct, dist, "orders", "user_id", base, res.orders)
			for i, c := range direct {
				var n int
				if err := c.QueryRow(ctx, "SELECT count(*) FROM users WHERE name LIKE 'rolled back%'").Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n != 0 {
					t.Errorf("shard s%d holds %d rows written by rolled-back transactions", i, n)
				}
			}
			if d.check != nil {
				d.check(t, ctx, direct, base)
			}
			t.Logf("transaction pooling, %s: %d statements, %d rows back, %d users and %d orders left, %d idle gaps with its sessions parked, in %v",
				d.name, res.statements, res.rows, res.users, res.orders, res.parkWaits, res.took.Round(time.Millisecond))
		})
	}
}

// result is a program's RESULT line.
type result struct {
	statements, refusals, rows, users, orders int
	parkWaits                                 int // "WAIT PARKED" answered "GO"
	took                                      time.Duration
}

// run runs cmd with env added and parses its RESULT line; a non-zero exit
// or no RESULT line fails the test with the program's output. A program
// that prints "WAIT PARKED n" is answered "GO" on its standard input once
// parked reports n sessions parked ("NO" if it fails).
// parked, when not nil, waits until the proxy has parked n sessions.
func run(t *testing.T, ctx context.Context, cmd *exec.Cmd, env []string, parked func(ctx context.Context, n int) error) result {
	t.Helper()
	c := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	c.Dir = cmd.Dir
	c.Env = append(append(os.Environ(), cmd.Env...), env...)
	c.WaitDelay = 5 * time.Second
	var out testutil.Buffer // stderr is copied by exec's goroutine, stdout here
	c.Stderr = &out
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Args[0], err)
	}
	// A program that prints "WAIT PARKED n" waits on its standard input
	// until the proxy has parked n sessions (its idle connections).
	var (
		waitErr error
		waits   int
	)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		rest, ok := strings.CutPrefix(line, "WAIT PARKED ")
		if !ok {
			continue
		}
		reply := "GO\n"
		if n, err := strconv.Atoi(rest); err != nil || parked == nil {
			reply = "NO\n"
		} else if err := parked(ctx, n); err != nil {
			waitErr = err
			reply = "NO\n"
		} else {
			waits++
		}
		_, _ = io.WriteString(stdin, reply)
	}
	_ = stdin.Close()
	err = c.Wait()
	took := time.Since(start)
	if waitErr != nil {
		t.Errorf("%s: %v", cmd.Args[0], waitErr)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish within %v; output:\n%s", cmd.Args[0], runTimeout, out.String())
	}
	if err != nil {
		t.Fatalf("%s: %v; output:\n%s", cmd.Args[0], err, out.String())
	}
	var r result
	found := false
	sc = bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "RESULT ")
		if !ok {
			continue
		}
		found = true
		for _, f := range strings.Fields(rest) {
			k, v, _ := strings.Cut(f, "=")
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("bad RESULT field %q", f)
			}
			switch k {
			case "statements":
				r.statements = n
			case "refusals":
				r.refusals = n
			case "rows":
				r.rows = n
			case "users":
				r.users = n
			case "orders":
				r.orders = n
			}
		}
	}
	if !found {
		t.Fatalf("no RESULT line; output:\n%s", out.String())
	}
	r.took = took
	r.parkWaits = waits
	return r
}

// parkedExactly returns the wait for n parked sessions: it polls the
// proxy's pgshard_clients_parked until it reaches n, and fails if it goes
// past n (a session the proxy must not park, one inside a transaction,
// did) or does not get there within 30 s.
func parkedExactly(p *testproxy.Proxy) func(ctx context.Context, n int) error {
	h := p.Server.AdminHandler()
	return func(ctx context.Context, n int) error {
		parked := -1
		var scrapeErr error
		testutil.Poll(30*time.Second, func() (bool, string) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, "/metrics", nil))
			m := parkedMetric.FindStringSubmatch(rec.Body.String())
			if m == nil {
				scrapeErr = fmt.Errorf("no pgshard_clients_parked in /metrics")
				return true, ""
			}
			parked, _ = strconv.Atoi(m[1])
			return parked >= n || ctx.Err() != nil, ""
		})
		switch {
		case scrapeErr != nil:
			return scrapeErr
		case parked > n:
			return fmt.Errorf("%d sessions parked, the program has only %d idle connections", parked, n)
		case parked < n:
			return fmt.Errorf("%d of %d idle connections parked after 30 s", parked, n)
		}
		return nil
	}
}

var parkedMetric = regexp.MustCompile(`(?m)^pgshard_clients_parked (\d+)$`)

// checkPlacement reads table on every shard's primary: the program's rows
// (key modulo split within [base, base+keySpan)) must each be on the shard
// dist names, both shards must hold some, and there must be want of them.
func checkPlacement(t *testing.T, ctx context.Context, direct []*pgx.Conn, dist *shardmap.Distribution, table, key string, base int64, want int) {
	t.Helper()
	total := 0
	for i, c := range direct {
		shard := difftest.ShardName(i)
		rows, err := c.Query(ctx, fmt.Sprintf("SELECT %s FROM %s WHERE %s %% %d >= %d AND %s %% %d < %d",
			key, table, key, split, base, key, split, base+keySpan))
		if err != nil {
			t.Fatal(err)
		}
		keys, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		misplaced := 0
		for _, k := range keys {
			home, err := dist.ShardForInt64(k)
			if err != nil {
				t.Fatal(err)
			}
			if home != shard {
				misplaced++
			}
		}
		if misplaced > 0 {
			t.Errorf("%s: %d rows on %s belong elsewhere", table, misplaced, shard)
		}
		if len(keys) == 0 {
			t.Errorf("%s: no rows of the program on %s", table, shard)
		}
		total += len(keys)
	}
	if total != want {
		t.Errorf("%s: the shards hold %d rows of the program, it reported %d", table, total, want)
	}
}

// runtimeMissing skips t with how to install the runtime, or fails it in CI.
func runtimeMissing(t *testing.T, name string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Errorf("%s: %v (CI=true: .ci/run must install it)", name, err)
		return
	}
	t.Skipf("%s: %v", name, err)
}

func connect(t *testing.T, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// programDir is the directory of a program's sources.
func programDir(t *testing.T, name string) string {
	t.Helper()
	d, err := filepath.Abs(name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// preparePsycopg finds a python3 that imports psycopg2 (Debian's
// python3-psycopg2 installs for /usr/bin/python3, which may not be the
// python3 first on PATH).
func preparePsycopg(t *testing.T, _ string) (*exec.Cmd, error) {
	var tried []string
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		path, err := exec.LookPath(py)
		if err != nil {
			continue
		}
		tried = append(tried, path)
		if exec.Command(path, "-c", "import psycopg2").Run() == nil {
			return exec.Command(path, filepath.Join(programDir(t, "psycopg"), "check.py")), nil
		}
	}
	return nil, fmt.Errorf("no python3 with psycopg2 (tried %v); install it with: apt-get install python3-psycopg2", tried)
}

// prepareNodePG installs the locked node-postgres packages (npm ci) once
// into a cache directory named by the lockfile's hash, and runs the
// program from there.
func prepareNodePG(t *testing.T, _ string) (*exec.Cmd, error) {
	const how = "install it with: apt-get install nodejs npm"
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("node not found; %s", how)
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return nil, fmt.Errorf("npm not found; %s", how)
	}
	src := programDir(t, "nodepg")
	lock, err := os.ReadFile(filepath.Join(src, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(lock)
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "pgshard-test", "nodepg-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "pg", "package.json")); err != nil {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			t.Fatal(err)
		}
		tmp, err := os.MkdirTemp(filepath.Dir(dir), "nodepg-*")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(tmp)
		for _, f := range []string{"package.json", "package-lock.json"} {
			b, err := os.ReadFile(filepath.Join(src, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(tmp, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		ci := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts")
		ci.Dir = tmp
		if out, err := ci.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("npm ci (packages from %s into %s): %v\n%s", src, tmp, err, out)
		}
		// Another run may have finished first: its copy is as good.
		if err := os.Rename(tmp, dir); err != nil {
			if _, statErr := os.Stat(filepath.Join(dir, "node_modules", "pg", "package.json")); statErr != nil {
				t.Fatal(err)
			}
		}
	}
	cmd := exec.Command(node, filepath.Join(src, "check.js"))
	cmd.Env = []string{"NODE_PATH=" + filepath.Join(dir, "node_modules")}
	return cmd, nil
}

// jdbcJar is where Debian's libpostgresql-jdbc-java puts the driver;
// PGSHARD_JDBC_JAR overrides it.
const jdbcJar = "/usr/share/java/postgresql.jar"

// prepareJDBC compiles the program with javac into dir.
func prepareJDBC(t *testing.T, dir string) (*exec.Cmd, error) {
	const how = "install them with: apt-get install default-jdk-headless libpostgresql-jdbc-java"
	javac, err := exec.LookPath("javac")
	if err != nil {
		return nil, fmt.Errorf("javac not found; %s", how)
	}
	java, err := exec.LookPath("java")
	if err != nil {
		return nil, fmt.Errorf("java not found; %s", how)
	}
	jar := jdbcJar
	if j := os.Getenv("PGSHARD_JDBC_JAR"); j != "" {
		jar = j
	}
	if _, err := os.Stat(jar); err != nil {
		return nil, fmt.Errorf("pgjdbc: %v; %s (or set PGSHARD_JDBC_JAR)", err, how)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src := filepath.Join(programDir(t, "jdbc"), "Check.java")
	out, err := exec.CommandContext(ctx, javac, "-cp", jar, "-d", dir, src).CombinedOutput()
	if err != nil {
		t.Fatalf("javac %s: %v\n%s", src, err, out)
	}
	return exec.Command(java, "-cp", dir+string(os.PathListSeparator)+jar, "Check"), nil
}

// checkJDBCMigration checks that the JDBC program's migration script (DDL
// on a table outside the map, jdbc_audit_BASE, through the extended
// protocol) left the same schema on both shards.
func checkJDBCMigration(t *testing.T, ctx context.Context, direct []*pgx.Conn, base int64) {
	t.Helper()
	table := fmt.Sprintf("jdbc_audit_%d", base)
	const q = `SELECT coalesce(string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum), '')
		|| ' | ' || coalesce((SELECT string_agg(indexname, ', ' ORDER BY indexname) FROM pg_indexes WHERE tablename = $1), '')
		|| ' | ' || coalesce(obj_description($1::regclass, 'pg_class'), '')
		|| ' | ' || (SELECT count(*) FROM pg_class WHERE relname LIKE $1 || '%' AND relkind = 'S')
		FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped`
	want := fmt.Sprintf("id bigint, user_id bigint, what text, created timestamp with time zone | %[1]s_pkey, %[1]s_user_ix | audit trail (migration 3) | 0", table)
	for i, c := range direct {
		var got string
		if err := c.QueryRow(ctx, q, table).Scan(&got); err != nil {
			t.Errorf("s%d: %s: %v", i, table, err)
			continue
		}
		if got != want {
			t.Errorf("s%d: %s is %q, want %q", i, table, got, want)
		}
	}
}
