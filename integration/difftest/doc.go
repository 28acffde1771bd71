// Package difftest is pgshard's differential-testing oracle: the same
// schema and data are loaded into a plain PostgreSQL server (the
// reference) and through pgshard, and a corpus of queries must return the
// same rows both ways — or the refusal the corpus expects. Result order
// is compared only where the query fixes it (ORDER BY).
package difftest
