// Package wire is pgshard's view of the PostgreSQL v3 wire protocol.
//
// It frames messages (type byte + length) for the hot path without
// decoding them, reads the untyped startup packets (StartupMessage,
// SSLRequest, GSSENCRequest, CancelRequest) with hard limits, decodes the
// fields of the extended-protocol messages the proxy looks into (Parse,
// Bind, Describe, Execute, Close: DecodeParse and the others, without
// copying), and builds the few server messages the proxy originates
// itself (ErrorResponse, ReadyForQuery, ParameterStatus). Other message
// bodies are decoded with github.com/jackc/pgx/v5/pgproto3 where
// decoding is needed at all.
//
// Sub-package auth authenticates clients (SCRAM-SHA-256, md5, trust).
// Package proxy drives these pieces for each client session.
package wire
