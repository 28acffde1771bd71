// Package pool keeps authenticated backend connections to PostgreSQL
// servers and lends them to client sessions.
//
// A Pool serves one (endpoint, user, database) triple. Connections are
// opened with pgconn (which handles TLS and SCRAM/md5 authentication),
// then hijacked: from then on the proxy speaks raw protocol frames on
// them. A Conn carries the per-backend state the session loop needs to
// keep prepared statements and session parameters correct when clients
// move between backends.
package pool
