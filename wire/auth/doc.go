// Package auth authenticates PostgreSQL clients at the proxy.
//
// pgshard terminates client authentication itself instead of passing it
// through to the shards: the proxy accepts a connection, reads the
// StartupMessage (see package wire), looks up the user's stored
// Credential and calls Authenticate, which drives the SCRAM-SHA-256(-PLUS),
// md5 or trust exchange over a Conn (a pgproto3.Backend, or a FrameConn
// over the proxy's own frame reader). Connections to the shards
// authenticate separately with pgconn.
//
// Passwords are never stored: the package computes and parses verifiers in
// the formats PostgreSQL keeps in pg_authid.rolpassword (NewSCRAMVerifier,
// ParseSCRAMVerifier, MD5Verifier, ParseCredential), so verifiers can be
// copied between pgshard's user list and PostgreSQL unchanged. Nothing in this
// package logs a password, and Error values never contain one.
//
// As in PostgreSQL, a failed login always reads `password authentication
// failed for user "..."` (SQLSTATE 28P01), and a user without a usable
// verifier goes through a fake SCRAM exchange with a salt that is stable per
// user name, so clients cannot probe which users exist.
package auth
