// Package shardmaptest builds shard maps for tests: a Builder for the
// shapes tests use (shards with replicas, fenced servers or a switch in
// progress; bigint range and hash distributions; sharded and unsharded
// tables), and the fixture several packages share (KV).
//
// A built map is validated; YAML gives its text as ParseYAML reads it,
// for tests that write a map file or hand YAML to a command. Tests about
// the YAML form itself, and tests that edit a map's text, keep their
// text inline.
//
// Only tests import it (internal/layers_test.go checks).
package shardmaptest
