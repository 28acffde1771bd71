package proxy_test

import (
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	_ "github.com/lib/pq"

	"github.com/pgshard/pgshard/integration"
	"github.com/pgshard/pgshard/internal/pgcluster"
)

// TestLibPQDatabaseSQL drives the proxy with lib/pq through database/sql,
// including its unnamed-statement extended protocol and transactions.
func TestLibPQDatabaseSQL(t *testing.T) {
	pg := integration.StartPostgres(t)
	p := startProxy(t, baseConfig(t, pg))
	db, err := sql.Open("postgres", p.dsn(""))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(4)
	ctx := ctxT(t)
	if _, err := db.ExecContext(ctx, `CREATE TABLE items (id int PRIMARY KEY, label text, price numeric)`); err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO items VALUES ($1, $2, $3)`)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 50; i++ {
		if _, err := stmt.ExecContext(ctx, i, fmt.Sprintf("item-%d", i), float64(i)*1.5); err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	var n int
	var sum float64
	if err := db.QueryRowContext(ctx, `SELECT count(*), sum(price) FROM items WHERE id > $1`, 10).Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	if n != 40 || sum != 1.5*float64((11+50)*40/2) {
		t.Fatalf("got count %d sum %v", n, sum)
	}
	rows, err := db.QueryContext(ctx, `SELECT id, label FROM items ORDER BY id LIMIT 3`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var id int
		var label string
		if err := rows.Scan(&id, &label); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d:%s", id, label))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "1:item-1,2:item-2,3:item-3" {
		t.Fatalf("rows %v", got)
	}
	// A rolled-back transaction leaves nothing behind.
	tx, _ = db.BeginTx(ctx, nil)
	if _, err := tx.ExecContext(ctx, `DELETE FROM items`); err != nil {
		t.Fatal(err)
	}
	_ = tx.Rollback()
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM items`).Scan(&n); err != nil || n != 50 {
		t.Fatalf("after rollback: %d %v", n, err)
	}
}

func pgBin(t testing.TB, name string) string {
	t.Helper()
	dir, err := pgcluster.FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	return dir + "/" + name
}

// TestPsql runs psql scripts (multi-statement queries, meta-commands that
// query the catalogs, \copy) through the proxy.
func TestPsql(t *testing.T) {
	pg := integration.StartPostgres(t)
	p := startProxy(t, baseConfig(t, pg))
	script := `
CREATE TABLE t (id int, v text);
INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;
BEGIN; UPDATE t SET v = 'x' WHERE id = 1; COMMIT;
\d t
\copy t TO STDOUT WITH (FORMAT csv)
SELECT count(*) AS n, max(v) AS m FROM t;
`
	cmd := exec.Command(pgBin(t, "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", port(p.addr), "-U", appUser, "-d", "postgres")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+appPassword, "PGSSLMODE=disable")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{"Table \"public.t\"", "1,x\n", "100,v100\n", " 100 | x"} {
		if !strings.Contains(s, want) {
			t.Errorf("psql output lacks %q:\n%s", want, s)
		}
	}
}

func port(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }

// TestPgbenchModes runs pgbench's built-in TPC-B-like script in all three
// query modes through the proxy and requires zero failed transactions.
func TestPgbenchModes(t *testing.T) {
	pg := integration.StartPostgres(t)
	p := startProxy(t, baseConfig(t, pg))
	env := append(os.Environ(), "PGPASSWORD="+appPassword, "PGSSLMODE=disable")
	common := []string{"-h", "127.0.0.1", "-p", port(p.addr), "-U", appUser}
	init := exec.Command(pgBin(t, "pgbench"), append([]string{"-i", "-s", "1", "-q"}, append(common, "postgres")...)...)
	init.Env = env
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	reTx := regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	reFailed := regexp.MustCompile(`number of failed transactions: (\d+)`)
	for _, mode := range []string{"simple", "extended", "prepared"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(pgBin(t, "pgbench"), append([]string{"-n", "-c", "8", "-j", "2", "-t", "200", "-M", mode}, append(common, "postgres")...)...)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("pgbench: %v\n%s", err, out)
			}
			m := reTx.FindSubmatch(out)
			if m == nil || string(m[1]) != "1600" {
				t.Fatalf("expected 1600 transactions:\n%s", out)
			}
			if f := reFailed.FindSubmatch(out); f == nil || string(f[1]) != "0" {
				t.Fatalf("expected 0 failed transactions:\n%s", out)
			}
		})
	}
	// The TPC-B-like script keeps the balances consistent.
	c := connect(t, p.dsn(""))
	var a, b int64
	if err := c.QueryRow(ctxT(t), `SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(delta) FROM pgbench_history)`).Scan(&a, &b); err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("sum(abalance)=%d but sum(history delta)=%d", a, b)
	}
}
