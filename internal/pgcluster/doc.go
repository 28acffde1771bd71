// Package pgcluster starts and stops real PostgreSQL servers for tests and
// for the `pgshard demo` command.
//
// It runs the server binaries of a local PostgreSQL installation (see
// [FindBinDir]) as child processes: each [Server] is a postmaster started with
// `postgres -D dir -p port`, with its data directory in a private temporary
// root (see [RootDir]). A data directory made once by initdb is cached under
// os.TempDir() and copied for every new server, so a server starts in well
// under a second. Options add streaming replicas, TLS, an authentication
// method and login roles; [Cluster] starts several independent shards.
//
// When the calling process runs as root, PostgreSQL refuses to run as root, so
// the servers run as the `postgres` OS user and the harness chowns the
// directories it makes. Servers are started with a parent-death signal, so
// they stop when the process that started them dies; [Running] lists the
// postmasters still alive for leak checks.
//
// The package does not import "testing": package integration wraps it with
// t.Cleanup and t.Fatal for tests. It lives under internal/ because the
// shipped binary links it (for `pgshard demo`), and nothing under
// integration/ may be linked into the binary.
package pgcluster
