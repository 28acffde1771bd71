package plan

import (
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// replicaSafeFunc reports whether a call of f (lower-case name) is known
// not to write: one of PostgreSQL's own functions below, unqualified or
// in pg_catalog. Everything else — above all user-defined functions,
// which may write even when called from a SELECT — keeps a statement on
// the primary.
func replicaSafeFunc(f *pg.FuncCall, name string) bool {
	if len(f.Funcname) > 2 {
		return false
	}
	if len(f.Funcname) == 2 && !strings.EqualFold(f.Funcname[0].GetString_().GetSval(), "pg_catalog") {
		return false
	}
	return replicaSafeFuncs[name]
}

// configuredSafe reports whether the configuration names f as a function
// that never writes (Options.ReplicaSafeFuncs), by its name or by its
// schema-qualified name as the statement writes it.
func (st *state) configuredSafe(f *pg.FuncCall) bool {
	if st.safeFuncs == nil || len(f.Funcname) == 0 || len(f.Funcname) > 2 {
		return false
	}
	parts := make([]string, len(f.Funcname))
	for i, n := range f.Funcname {
		parts[i] = strings.ToLower(n.GetString_().GetSval())
	}
	return st.safeFuncs[strings.Join(parts, ".")] || len(parts) == 1 && st.safeFuncs["public."+parts[0]]
}

// replicaSafeFuncs are built-in functions that read only.
var replicaSafeFuncs = func() map[string]bool {
	m := make(map[string]bool)
	for _, group := range []string{
		// aggregates and window functions
		`count sum avg min max bool_and bool_or every array_agg string_agg json_agg jsonb_agg
		json_object_agg jsonb_object_agg stddev stddev_pop stddev_samp variance var_pop var_samp
		bit_and bit_or bit_xor corr covar_pop covar_samp regr_avgx regr_avgy regr_count regr_intercept
		regr_r2 regr_slope regr_sxx regr_sxy regr_syy percentile_cont percentile_disc mode
		row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value`,
		// strings
		`lower upper length char_length character_length octet_length bit_length substr substring
		trim btrim ltrim rtrim replace concat concat_ws left right lpad rpad position strpos split_part
		format initcap md5 sha224 sha256 sha384 sha512 encode decode to_char to_number to_date to_timestamp
		regexp_replace regexp_match regexp_matches regexp_split_to_array regexp_split_to_table regexp_like
		regexp_count regexp_instr regexp_substr starts_with reverse repeat translate quote_ident
		quote_literal quote_nullable ascii chr overlay unistr normalize to_hex`,
		// numbers
		`abs ceil ceiling floor round trunc mod power pow sqrt cbrt exp ln log log10 sign div
		greatest least random width_bucket degrees radians pi sin cos tan asin acos atan atan2 gcd lcm
		factorial scale trim_scale min_scale`,
		// dates and times
		`now date_trunc date_part extract age make_date make_time make_timestamp make_timestamptz
		make_interval clock_timestamp statement_timestamp transaction_timestamp timeofday timezone
		date_bin justify_days justify_hours justify_interval isfinite to_timestamp`,
		// json
		`json_build_object jsonb_build_object json_build_array jsonb_build_array to_json to_jsonb
		row_to_json array_to_json json_extract_path jsonb_extract_path json_extract_path_text
		jsonb_extract_path_text json_array_length jsonb_array_length json_typeof jsonb_typeof jsonb_set
		jsonb_insert jsonb_strip_nulls json_strip_nulls jsonb_pretty json_each jsonb_each json_each_text
		jsonb_each_text json_array_elements jsonb_array_elements json_array_elements_text
		jsonb_array_elements_text json_object_keys jsonb_object_keys jsonb_path_query
		jsonb_path_query_array jsonb_path_query_first jsonb_path_exists jsonb_path_match json_object jsonb_object`,
		// arrays and sets
		`array_length cardinality unnest array_position array_positions array_remove array_replace
		array_append array_prepend array_cat array_to_string string_to_array array_upper array_lower
		array_ndims array_dims generate_series generate_subscripts array_fill string_to_table`,
		// uuids, hashes (pgshard's own routing SQL) and information
		`gen_random_uuid hashint8extended hashtextextended uuid_hash_extended hashtext hashint8
		pg_typeof version current_setting current_database current_schema current_schemas
		pg_is_in_recovery pg_last_wal_replay_lsn pg_last_wal_receive_lsn pg_last_xact_replay_timestamp
		inet_server_port inet_server_addr inet_client_addr inet_client_port pg_backend_pid
		num_nonnulls num_nulls pg_column_size pg_size_pretty pg_postmaster_start_time`,
	} {
		for _, f := range strings.Fields(group) {
			m[f] = true
		}
	}
	return m
}()
