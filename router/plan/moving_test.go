package plan

import (
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

// movingPlanner plans with testMap plus a marker holding users [150, 180)
// (from s2 to s4) and one on the accounts hash interval of key 'bob'.
func movingPlanner(t *testing.T) (*Planner, *Planner) {
	t.Helper()
	m := testMap(t)
	d := m.Distribution("accounts")
	h := shardmap.HashText("bob")
	var from string
	for _, iv := range d.Intervals {
		if iv.Lo.Compare(shardmap.Int64Bound(h)) <= 0 && shardmap.Int64Bound(h).Compare(iv.Hi) < 0 {
			from = iv.Shard
		}
	}
	mm, err := m.WithMoving("users", shardmap.Moving{ID: "mv1", Lo: shardmap.Int64Bound(150), Hi: shardmap.Int64Bound(180), From: "s2", To: "s4", Step: shardmap.MoveHold}, false)
	if err != nil {
		t.Fatal(err)
	}
	mm, err = mm.WithMoving("accounts", shardmap.Moving{ID: "mv2", Lo: shardmap.Int64Bound(h), Hi: shardmap.Int64Bound(h + 1), From: from, To: "s4", Step: shardmap.MoveHold}, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := mm.Validate(); err != nil {
		t.Fatal(err)
	}
	return New(m, Options{}), New(mm, Options{})
}

func TestPlanMovingInterval(t *testing.T) {
	plain, moving := movingPlanner(t)
	cases := []struct {
		sql    string
		params [][]byte
		want   string // Plan.Moving
	}{
		{"SELECT * FROM users WHERE id = 150", nil, "mv1"},
		{"SELECT * FROM users WHERE id = 179", nil, "mv1"},
		{"SELECT * FROM users WHERE id = 180", nil, ""},
		{"SELECT * FROM users WHERE id = 149", nil, ""},
		{"UPDATE users SET n = 1 WHERE id = $1", [][]byte{[]byte("160")}, "mv1"},
		{"UPDATE users SET n = 1 WHERE id = $1", [][]byte{[]byte("120")}, ""},
		{"INSERT INTO users (id, n) VALUES (10, 1), (155, 2)", nil, "mv1"},
		{"INSERT INTO users (id, n) VALUES (10, 1), (120, 2)", nil, ""},
		{"SELECT * FROM users WHERE id = ANY('{1,170}')", nil, "mv1"},
		{"/* pgshard: key=171 */ SELECT 1", nil, ""},
		{"/* pgshard: key=171 */ SELECT * FROM users", nil, "mv1"},
		// Keyless: writes reaching s2 are held, reads flow.
		{"UPDATE users SET n = 1", nil, "mv1"},
		{"DELETE FROM users WHERE n = 3", nil, "mv1"},
		{"SELECT count(*) FROM users", nil, ""},
		{"SELECT * FROM settings", nil, ""},
		{"BEGIN", nil, ""},
		// Hash: the key's hash decides.
		{"SELECT * FROM accounts WHERE name = 'bob'", nil, "mv2"},
		{"SELECT * FROM accounts WHERE name = 'alice'", nil, ""},
	}
	for _, c := range cases {
		p, err := moving.Route(c.sql, c.params, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", c.sql, err)
		}
		if p.Moving != c.want {
			t.Errorf("%s: Moving = %q, want %q (plan %s)", c.sql, p.Moving, c.want, summary(p))
		}
		if c.want != "" {
			if want := map[string]string{"mv1": "users", "mv2": "accounts"}[c.want]; p.MovingDist != want {
				t.Errorf("%s: MovingDist = %q, want %q", c.sql, p.MovingDist, want)
			}
		}
		q, _ := plain.Route(c.sql, c.params, nil, nil)
		if q.Moving != "" || q.MovingDist != "" {
			t.Errorf("%s: without a marker Moving = %q", c.sql, q.Moving)
		}
	}
}

// Without a marker, planning a keyed statement allocates no more than
// before markers existed (one allocation, measured on the parent commit).
func TestPlanMovingNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts under the race detector are not the code's own")
	}
	plain, _ := movingPlanner(t)
	params := [][]byte{[]byte("160")}
	sql := "SELECT * FROM users WHERE id = $1"
	if _, err := plain.Route(sql, params, nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = plain.Route(sql, params, nil, nil) }); n > 1 {
		t.Errorf("Route allocates %v times per run", n)
	}
}
