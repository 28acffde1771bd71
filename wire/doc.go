// Package wire is pgshard's view of the PostgreSQL v3 wire protocol.
//
// What it holds today:
//   - framing (frame.go): FrameReader reads messages (type byte + length)
//     for the hot path without decoding them, with a size limit;
//   - the untyped startup packets (startup.go): StartupMessage,
//     SSLRequest, GSSENCRequest and CancelRequest, read with hard limits;
//   - field decoding of the extended-protocol messages the proxy looks
//     into (extended.go): DecodeParse, DecodeBind, DecodeDescribe,
//     DecodeExecute and DecodeClose, zero-copy, checked as PostgreSQL
//     does, fuzzed;
//   - errors (errors.go): Error, an error with a SQLSTATE that becomes an
//     ErrorResponse (Errorf, Fatalf, AsError); the few server messages the
//     proxy originates itself (ErrorResponse, ReadyForQuery,
//     ParameterStatus); and ErrorCode and ErrorField, which read the
//     fields of an ErrorResponse a server sent;
//   - the SQLSTATE codes the proxy reports (sqlstate.go), named as in
//     PostgreSQL's errcodes.txt.
//
// Other message bodies are decoded with github.com/jackc/pgx/v5/pgproto3
// where decoding is needed at all. Sub-package auth authenticates clients
// (SCRAM-SHA-256, md5, trust). Package proxy drives these pieces for each
// client session.
package wire
