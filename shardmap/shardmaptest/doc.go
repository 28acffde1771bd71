// Package shardmaptest builds shard maps for tests: a Builder for the
// shapes tests use (shards with replicas, fenced servers or a switch in
// progress; bigint range and hash distributions; sharded and unsharded
// tables), and the fixtures several packages share (KV, Users).
//
// A built map is validated; YAML gives its text as ParseYAML reads it,
// for tests that write a map file or hand YAML to a command. Tests about
// the YAML form itself keep their text inline.
//
// Only tests import it (internal/layers_test.go checks).
package shardmaptest
