package plan

import (
	"encoding/binary"
	"testing"
)

// TestCacheRowKey: statements on a cacheable table that name one key
// value carry it (as PostgreSQL prints it), and only plain reads of that
// table's rows by the key are point reads; other tables get nothing.
func TestCacheRowKey(t *testing.T) {
	m := testMap(t)
	for i := range m.Tables {
		if m.Tables[i].Name == "public.users" || m.Tables[i].Name == "public.accounts" {
			m.Tables[i].Cache.Enabled = true
		}
	}
	p := New(m, Options{})
	for _, c := range []struct {
		sql   string
		key   string
		point bool
	}{
		{"SELECT * FROM users WHERE id = 42", "42", true},
		{"SELECT name, id FROM users u WHERE u.id = 0042 AND name <> 'x' ORDER BY name LIMIT 3", "42", true},
		{"select * from users where id = '7'", "7", true},
		{"SELECT * FROM accounts WHERE name = 'Bob''s'", "Bob's", true},
		{"SELECT * FROM users WHERE id = 42 FOR UPDATE", "42", false},
		{"SELECT * FROM users WHERE id = 42 FOR SHARE", "42", false},
		{"SELECT *, random() FROM users WHERE id = 42", "42", false},
		{"SELECT *, now() FROM users WHERE id = 42", "42", false},
		{"SELECT *, current_timestamp FROM users WHERE id = 42", "42", false},
		{"SELECT *, 'now'::timestamptz FROM users WHERE id = 42", "42", false},
		{"SELECT count(*) FROM users WHERE id = 42", "42", false},
		{"SELECT * FROM users WHERE id = 42 AND EXISTS (SELECT 1 FROM orders WHERE user_id = 42)", "", false},
		{"SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = 42", "42", false},
		{"WITH x AS (SELECT * FROM users WHERE id = 42) SELECT * FROM x", "42", false},
		{"SELECT * FROM users WHERE id = 42 UNION ALL SELECT * FROM users WHERE id = 42", "", false},
		{"SELECT * FROM users WHERE id IN (42, 43)", "", false},
		{"SELECT * FROM users WHERE id = ANY('{42}')", "", false},
		{"SELECT * FROM users", "", false},
		{"SELECT * FROM orders WHERE user_id = 42", "", false}, // not cacheable
		{"UPDATE users SET name = 'x' WHERE id = 42", "42", false},
		{"DELETE FROM users WHERE id = 42", "42", false},
		{"INSERT INTO users (id, name) VALUES (42, 'x')", "42", false},
		{"INSERT INTO users (id, name) VALUES (42, 'x') ON CONFLICT (name) DO UPDATE SET name = 'y'", "", false},
		{"INSERT INTO users (id, name) VALUES (1, 'x'), (2, 'y')", "", false},
		{"UPDATE orders SET amount = 1 WHERE user_id = 42", "", false},
	} {
		for range 2 { // the second from the plan cache
			pl, err := p.Route(c.sql, nil, nil, nil)
			if err != nil {
				t.Fatalf("%s: %v", c.sql, err)
			}
			if pl.RowKey != c.key || pl.PointRead != c.point {
				t.Errorf("%s: RowKey %q PointRead %v, want %q %v", c.sql, pl.RowKey, pl.PointRead, c.key, c.point)
			}
		}
	}
	// Parameters, text and binary.
	var b8 [8]byte
	binary.BigEndian.PutUint64(b8[:], 99)
	for _, c := range []struct {
		params  [][]byte
		formats []int16
		key     string
	}{
		{[][]byte{[]byte("99")}, nil, "99"},
		{[][]byte{b8[:]}, []int16{1}, "99"},
		{[][]byte{nil}, nil, ""},
	} {
		pl, _ := p.Route("SELECT * FROM users WHERE id = $1", c.params, c.formats, nil)
		if pl.RowKey != c.key || pl.PointRead != (c.key != "") {
			t.Errorf("params %q: RowKey %q PointRead %v", c.params, pl.RowKey, pl.PointRead)
		}
	}
}
