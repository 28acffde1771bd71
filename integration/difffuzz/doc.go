// Package difffuzz is pgshard's differential fuzzer: a grammar-based
// generator of deterministic SELECTs over difftest's users/orders schema,
// run through pgshard and on a plain PostgreSQL server holding the same
// rows (difftest's dataset, smaller, plus edge rows: the smallest and
// largest bigint keys, 0 and -1, a name repeated across shards, NaN,
// ±Infinity and -0 values). Every answer that differs from the
// reference's and is not a refusal (SQLSTATE 0A000 from pgshard) is a
// failure; refusals are counted by reason.
//
// Generate(seed) returns the same statement for the same seed. It
// covers: one table, joins on the key (inner, LEFT, RIGHT, FULL, comma
// joins with the equality in WHERE, a three-way join) and off it,
// VALUES/generate_series joined on the key, LATERAL, subqueries and
// CTEs in FROM (recursive CTEs over unsharded rows too), EXISTS/NOT
// EXISTS, IN/NOT IN subqueries and scalar subqueries, key conditions
// (=, IN, = ANY(ARRAY), BETWEEN, OR) with values on one or several
// shards, aggregates (count, sum, avg, min/max, bool_and/bool_or/every,
// count(DISTINCT), FILTER, string_agg, stddev/variance, under a collation,
// of real) alone and inside expressions, GROUP BY (expressions, positions,
// output names, ROLLUP) and HAVING, DISTINCT and DISTINCT ON, ORDER BY
// (positions, expressions, ASC/DESC, NULLS FIRST/LAST), LIMIT/OFFSET/FETCH
// (WITH TIES, expressions), set operations, window functions, casts, NULL
// literals and functions of NULLs, SELECT *, and values that are the same
// on every server yet per-shard to pgshard (now(), tableoid). Statements
// of the extended protocol pass key values as parameters half of the time.
//
// Determinism, which the comparison relies on:
//   - A statement without ORDER BY is compared as a multiset of rows. LIMIT,
//     OFFSET and FETCH come only with an ORDER BY that ends with every
//     output column (by position), so that ties are only between identical
//     rows and the rows kept are the same; DISTINCT ON orders by its
//     expression, then by unique columns of every source. Subqueries with
//     LIMIT (LATERAL) order by a unique column.
//   - Window functions whose value depends on the order of peers
//     (row_number, lag) order by unique columns of every source.
//   - No volatile function; arithmetic on keys only through % (the edge
//     keys would overflow otherwise); numeric literals have the columns'
//     scale (0 and 0.00 sort as ties but print differently); no cast of
//     NaN to an integer.
//   - Floats are summed only from the weight column, multiples of 1/64
//     (and NaN/±Infinity), whose sums are exact in any order: no tolerance
//     is needed, and no known deviation is excused.
//
// Each statement runs in one protocol mode, chosen by its seed (Mode):
// the simple protocol, or the extended protocol with a named (cached)
// statement or the unnamed one; the statement runs on every
// configuration, and on the reference once.
package difffuzz
