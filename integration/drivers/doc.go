// Package drivers runs other languages' PostgreSQL drivers against a
// sharded pgshard (two shards, a range map, transaction pooling) in its
// test: psycopg2 (psycopg/check.py), node-postgres with pg-copy-streams
// (nodepg/check.js, packages pinned by nodepg/package-lock.json and
// installed with npm ci into the user's cache directory) and pgjdbc
// (jdbc/Check.java, compiled with javac at test time). Each program checks
// the answers it gets and reports how many statements it ran and which
// rows it left; the test checks those rows on each shard's primary.
package drivers
