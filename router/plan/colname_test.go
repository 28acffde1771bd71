package plan

import "testing"

// TestOutputNames checks the column names a merged result gets, which
// must be PostgreSQL's (FigureColname): a cast names its column after
// the type only when its argument has no name of its own. (The
// differential tests check the names clients see end to end.)
func TestOutputNames(t *testing.T) {
	p := New(testMap(t), Options{})
	for expr, want := range map[string]string{
		"(id % 4)::float8":                             "float8",
		"id::text":                                     "id",
		"7::int":                                       "int4",
		"(id::text)::int":                              "id",
		"CASE WHEN active THEN 1 ELSE 2 END":           "case",
		"CASE WHEN active THEN 1 ELSE name END":        "name",
		"CASE WHEN active THEN 1 ELSE 2::int8 END":     "case",
		"coalesce(city, '?')":                          "coalesce",
		"nullif(city, 'x')":                            "nullif",
		"greatest(id, 2)":                              "greatest",
		"least(id, 2)::text":                           "least",
		"(SELECT max(g) FROM generate_series(1, 3) g)": "max",
		"(SELECT 1)":                                   "?column?",
		"EXISTS (SELECT 1)":                            "exists",
		"id + 1":                                       "?column?",
		"(id + 1)::numeric":                            "numeric",
		"lower(name) COLLATE \"C\"":                    "lower",
		"ARRAY[id]":                                    "array",
		"ROW(id, name)":                                "row",
		"name AS n":                                    "n",
		"extract(month FROM created_at)::int":          "extract",
	} {
		sql := "SELECT " + expr + ", id FROM users ORDER BY 2"
		pl, err := p.Route(sql, nil, nil, nil)
		if err != nil || pl.Decision() != "all" || pl.Merge == nil || len(pl.Merge.Final) == 0 {
			t.Errorf("%s: plan %v %v", sql, pl.Kind, err)
			continue
		}
		// "" keeps the shards' own name for the column (they run the
		// same expression, so it is PostgreSQL's); a name the merge gives
		// a column it computes must be PostgreSQL's.
		if got := pl.Merge.Final[0].Name; got != want && got != "" {
			t.Errorf("%s: column named %q, want %q", expr, got, want)
		}
	}
}
