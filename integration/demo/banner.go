package demo

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/pgshard/pgshard/integration/pgcluster"
)

// Banner is what [WriteBanner] describes.
type Banner struct {
	Cluster *pgcluster.Cluster
	// ProxyAddr is the proxy's bound client address.
	ProxyAddr string
	// AdminAddr is the admin HTTP address; "" when disabled.
	AdminAddr string
}

// WriteBanner prints what is running, how to connect and a few queries to
// try.
func WriteBanner(w io.Writer, b Banner) error {
	proxyAddr := DialAddr(b.ProxyAddr)
	var sb strings.Builder
	sb.WriteString("\npgshard demo is running.\n\n")
	tw := tabwriter.NewWriter(&sb, 0, 4, 2, ' ', 0)
	for _, s := range b.Cluster.Shards {
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
	fmt.Fprintf(&sb, "\nTable %s has %d sample rows. Connect through the proxy:\n\n", SampleTable, SampleRows)
	fmt.Fprintf(&sb, "  psql %q\n\n", ConnString(proxyAddr))
	sb.WriteString("and try:\n\n")
	sb.WriteString("  SELECT count(*) FROM users;\n")
	sb.WriteString("  SELECT id, name, email FROM users WHERE id = 42;\n")
	sb.WriteString("  SELECT date_trunc('month', created_at) AS month, count(*) FROM users GROUP BY 1 ORDER BY 1;\n")
	sb.WriteString("  INSERT INTO users (id, name, email) VALUES (1001, 'You', 'you@example.com');\n")
	if len(b.Cluster.Shards) > 0 {
		p := b.Cluster.Shards[0]
		fmt.Fprintf(&sb, "\nThe servers themselves take superuser %s/%s, e.g.\n\n  psql %q\n",
			pgcluster.SuperuserName, pgcluster.SuperuserPassword, p.SuperDSN(Database))
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
