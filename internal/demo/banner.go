package demo

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/pgshard/pgshard/internal/pgcluster"
)

// Banner is what [WriteBanner] describes.
type Banner struct {
	Cluster *pgcluster.Cluster
	// ProxyAddr is the proxy's bound client address.
	ProxyAddr string
	// AdminAddr is the admin HTTP address; "" when disabled.
	AdminAddr string
	// MetaAddr is the embedded meta cluster's API address, "" when
	// disabled; MetaFlag is what the DBA commands need to reach it ("" at
	// the CLI's default address, else " --meta ADDR").
	MetaAddr string
	MetaFlag string
}

// The interval of users the banner suggests moving onto the spare shard:
// the upper half of the first shard's ids.
const (
	MoveLo = SplitID / 2
	MoveHi = SplitID
)

// MoveInterval is the interval the banner moves, as pgshard reshard takes it.
var MoveInterval = fmt.Sprintf("[%d,%d)", MoveLo, MoveHi)

// WriteBanner prints what is running, how to connect and a few queries to
// try.
func WriteBanner(w io.Writer, b Banner) error {
	proxyAddr := DialAddr(b.ProxyAddr)
	var sb strings.Builder
	sb.WriteString("\npgshard demo is running.\n\n")
	tw := tabwriter.NewWriter(&sb, 0, 4, 2, ' ', 0)
	for _, s := range b.Cluster.Shards {
		if s.Name == SpareShard {
			fmt.Fprintf(tw, "  shard %s\tprimary\t%s  (the schema, no data: owns no interval yet)\n", s.Name, s.Addr())
			continue
		}
		fmt.Fprintf(tw, "  shard %s\tprimary\t%s\n", s.Name, s.Addr())
		for _, r := range s.Replicas {
			fmt.Fprintf(tw, "  \treplica\t%s  (streaming from %s)\n", r.Addr(), s.Name)
		}
	}
	fmt.Fprintf(tw, "  proxy\tclients\t%s  (user %s, password %s)\n", proxyAddr, User, Password)
	if b.AdminAddr != "" {
		base := "http://" + DialAddr(b.AdminAddr)
		fmt.Fprintf(tw, "  \tmetrics\t%s/metrics  (also /healthz, /readyz)\n", base)
	}
	_ = tw.Flush()
	fmt.Fprintf(&sb, "\nusers (%d rows) is range-sharded by id: ids below %d live on the first shard, the rest on\n", SampleRows, SplitID)
	sb.WriteString("the second; orders (two per user) live with their user. Connect through the proxy:\n\n")
	fmt.Fprintf(&sb, "  psql %q\n\n", ConnString(proxyAddr))
	sb.WriteString("and try:\n\n")
	fmt.Fprintf(&sb, "  SELECT id, name, email FROM users WHERE id = 42;          -- one shard\n")
	fmt.Fprintf(&sb, "  SELECT id, name FROM users WHERE id = %d;                -- the other shard\n", SampleRows-58)
	sb.WriteString("  SELECT u.name, sum(o.amount) FROM users u JOIN orders o ON o.user_id = u.id\n")
	sb.WriteString("    WHERE u.id = 7 GROUP BY u.name;                          -- a join on the key stays on one shard\n")
	sb.WriteString("  SELECT count(*), avg(amount) FROM orders;                 -- both shards, merged\n")
	sb.WriteString("  SELECT id, name FROM users ORDER BY created_at DESC LIMIT 5; -- merged in order\n")
	sb.WriteString("  INSERT INTO users (id, name, email) VALUES (1001, 'You', 'you@example.com');\n")
	sb.WriteString("  EXPLAIN (pgshard) SELECT * FROM users WHERE id IN (7, 900); -- where a statement goes\n")
	sb.WriteString("  SELECT name, count(*) OVER () FROM users;                -- refused (0A000): not exact across shards\n")
	sb.WriteString("  SELECT inet_server_port() FROM users WHERE id = 42;      -- reads go to a replica (after a write: to\n")
	sb.WriteString("                                                           -- one that has it, else the primary)\n")
	sb.WriteString("  SHOW SHARDS;                                             -- servers, their state and lag\n")
	sb.WriteString("\nusers is cacheable: run SELECT * FROM users WHERE id = 42 a few times, then watch the hits\n")
	fmt.Fprintf(&sb, "in the admin console (psql %q -c 'SHOW CACHE')", ConsoleConnString(proxyAddr))
	if b.AdminAddr != "" {
		fmt.Fprintf(&sb, "\nor in http://%s/metrics (pgshard_cache_lookups_total)", DialAddr(b.AdminAddr))
	}
	sb.WriteString(";\nan UPDATE of the row, through the proxy or straight on its shard, is seen at once.\n")
	sb.WriteString("\nIdle clients are cheap: a client with nothing to do gives up its goroutine and its socket\n")
	sb.WriteString("waits in the proxy's epoll set (about 2 KiB a client; PgBouncer's is 1). Open a few hundred\n")
	sb.WriteString("connections and leave them idle")
	if b.AdminAddr != "" {
		fmt.Fprintf(&sb, ": pgshard_clients_parked in http://%s/metrics counts them", DialAddr(b.AdminAddr))
	}
	sb.WriteString(".\n")
	data := DataShards(b.Cluster)
	fmt.Fprintf(&sb, "\nA transaction may write on both shards (two-phase commit): move 10 from user %d (%s)\n", TransferFrom, data[0].Name)
	fmt.Fprintf(&sb, "to user %d (%s), atomically:\n\n", TransferTo, data[len(data)-1].Name)
	fmt.Fprintf(&sb, "  %s\n", TransferSQL)
	fmt.Fprintf(&sb, "  SELECT id, balance FROM users WHERE id IN (%d, %d);\n", TransferFrom, TransferTo)
	if b.MetaAddr == "" {
		sb.WriteString("\n(pgshard demo --meta-listen ADDR runs a meta cluster for pgshard map, shards, reshard and\ntransactions.)\n")
	} else {
		m := b.MetaFlag
		fmt.Fprintf(&sb, "\nand from another terminal: pgshard transactions list%s (in-doubt transactions, recent decisions).\n", m)
		fmt.Fprintf(&sb, "\nAlso: pgshard shards list%s, pgshard failover --shard %s%s (a planned switchover to the\n", m, data[0].Name, m)
		fmt.Fprintf(&sb, "replica; the old primary is fenced), pgshard map show%s.\n", m)
		fmt.Fprintf(&sb, "\nResharding under traffic: keep writing (a pgbench script updating random users)\n\n")
		sb.WriteString("  printf '\\\\set id random(1, 1000)\\nUPDATE users SET created_at = now() WHERE id = :id;\\n' > writes.sql\n")
		fmt.Fprintf(&sb, "  pgbench -n -c 4 -T 600 -P 5 -f writes.sql %q\n\n", ConnString(proxyAddr))
		fmt.Fprintf(&sb, "and move users %d..%d from %s onto the empty shard %s (copy, catch up, verify, cut over):\n\n", MoveLo, MoveHi-1, data[0].Name, SpareShard)
		fmt.Fprintf(&sb, "  pgshard reshard move --distribution users --interval '%s' --to %s --cutover auto%s\n", MoveInterval, SpareShard, m)
		fmt.Fprintf(&sb, "  pgshard reshard status%s\n", m)
		fmt.Fprintf(&sb, "  pgshard reshard rollback --distribution users --interval '%s'%s   # give it back, or\n", MoveInterval, m)
		fmt.Fprintf(&sb, "  pgshard reshard cleanup --distribution users --interval '%s'%s    # finish: delete it on %s\n", MoveInterval, m, data[0].Name)
	}
	fmt.Fprintf(&sb, "\nEach shard's own rows, straight from its primary (superuser %s/%s):\n\n", pgcluster.SuperuserName, pgcluster.SuperuserPassword)
	for _, s := range b.Cluster.Shards {
		fmt.Fprintf(&sb, "  psql %q -c 'SELECT min(id), max(id), count(*) FROM users'\n", s.SuperDSN(Database))
	}
	sb.WriteString("\nPress Ctrl-C to stop.\n")
	_, err := io.WriteString(w, sb.String())
	return err
}

// InstallHelp returns a message saying which PostgreSQL binaries are missing
// and how to install them, when err is (or wraps) a
// *pgcluster.ErrNoPostgres; else "", false.
func InstallHelp(err error) (string, bool) {
	var np *pgcluster.ErrNoPostgres
	if !errors.As(err, &np) {
		return "", false
	}
	var sb strings.Builder
	sb.WriteString("pgshard demo needs the PostgreSQL server binaries (initdb, postgres, pg_basebackup),\n")
	fmt.Fprintf(&sb, "and none were found (looked in: %s).\n\n", strings.Join(np.Searched, ", "))
	sb.WriteString("Install them; on Debian or Ubuntu:\n\n")
	sb.WriteString("  sudo apt-get install -y postgresql\n\n")
	fmt.Fprintf(&sb, "or point %s at the directory holding them:\n\n", pgcluster.EnvPGBin)
	fmt.Fprintf(&sb, "  %s=/usr/lib/postgresql/16/bin pgshard demo\n", pgcluster.EnvPGBin)
	return sb.String(), true
}
