// Package pgadmin holds the actions a failover controller runs on real
// PostgreSQL 15 servers: read a server's state, promote a replica, repoint
// a replica to a new primary, wait until a replica has replayed a WAL
// position, quiesce a primary for a planned switchover, fence a former
// primary, and rebuild a former primary's data directory as a replica of
// the new one (used by `pgshard shards rejoin`).
//
// It sits beside replication/health, which watches the same servers and
// whose [health.LSN] it uses for WAL positions; the failover and switchover
// logic that decides when to call what lives above it.
//
// # Contract
//
// [Admin] methods connect with pgconn to "host:port" addresses, one session
// per call, closed before they return; they are safe for concurrent use.
// Every method is idempotent, so a controller can retry one after a
// timeout or a crash: [Admin.Promote] on a primary only lifts a read-only
// setting, [Admin.Repoint] leaves a replica that already streams from the
// right primary alone, [Admin.Quiesce] and [Admin.Fence] on a quiesced or
// fenced server only check. Methods block until the server shows the
// result (promoted, streaming, reloaded, backends gone) or ctx ends.
//
// Fencing and quiescing set default_transaction_read_only in
// postgresql.auto.conf (ALTER SYSTEM, then pg_reload_conf), which makes
// new transactions read-only: writes fail with SQLSTATE 25006. It is a
// default, not a lock: a client that runs SET default_transaction_read_only
// = off or BEGIN READ WRITE can still write, so the proxy must also stop
// routing writes to the server. [Admin.Promote] resets it.
//
// The role in [Config] must be allowed to run pg_promote, ALTER SYSTEM,
// pg_reload_conf, pg_terminate_backend on other roles' sessions, CHECKPOINT
// and to read primary_conninfo and pg_stat_wal_receiver: a superuser in
// practice.
//
// [Rebuild] works on a stopped server's data directory on the local host,
// with pg_rewind or pg_basebackup; see there for what it needs.
//
// No error or log line carries a password: the admin password never goes
// through a connection string, conninfo text shown to people is masked,
// and tool output is scrubbed. The server is another matter: ALTER SYSTEM
// SET primary_conninfo carries the replication password, which the server
// keeps in postgresql.auto.conf (as pg_basebackup -R does) and writes to
// its log when it reloads the setting ("parameter primary_conninfo
// changed to ...") or with log_statement = ddl or all.
package pgadmin
