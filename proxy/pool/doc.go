// Package pool keeps authenticated backend connections to PostgreSQL
// servers and lends them to client sessions.
//
// A Pool serves one (endpoint, user, database) triple. Connections are
// opened with pgconn (which handles TLS and SCRAM/md5 authentication),
// then hijacked: from then on the proxy speaks raw protocol frames on
// them. A Conn carries the per-backend state the session loop needs to
// keep prepared statements and session parameters correct when clients
// move between backends.
//
// Acquire lends the most recently returned idle connection, opens a new
// one while fewer than Size are open, or else waits (first come, first
// served) up to WaitTimeout or the end of its context; Release returns a
// connection, Discard closes a broken one and frees its slot. A reaper
// closes connections idle longer than IdleTimeout or older than
// MaxLifetime (checked on return too). Stats counts all of it for
// metrics and SHOW POOLS.
//
// A connection's frames are read by the pool and given to its owner's
// Handler; a lost connection fails the handler. A server that stops
// answering without closing the connection is found within seconds
// (sockopt.go): TCP keepalives while nothing is in flight, and while
// something is, a watchdog that resets a connection whose server
// acknowledged nothing for AckTimeout (ErrStalled). Abort resets every
// connection of a server the proxy must no longer use, idle or in use
// (ErrAborted), and cancels what the ones in use still run.
package pool
