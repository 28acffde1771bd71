package plan

import "testing"

// FuzzRoute checks that any text is planned, refused or reported as a
// parse error, without panicking, and that a cached plan agrees with a
// fresh one.
func FuzzRoute(f *testing.F) {
	f.Add("SELECT * FROM users WHERE id = 5")
	m := testMap(f)
	cached := New(m, Options{})
	fresh := New(m, Options{CacheSize: -1})
	f.Fuzz(func(t *testing.T, sql string) {
		for i := 0; i < 2; i++ {
			p, err := cached.Route(sql, nil, nil, nil)
			q, err2 := fresh.Route(sql, nil, nil, nil)
			if (err == nil) != (err2 == nil) {
				t.Fatalf("cached error %v, fresh %v", err, err2)
			}
			if err != nil {
				if p.Kind != 0 {
					t.Fatalf("error with a plan: %v", err)
				}
				continue
			}
			if p.Kind == 0 {
				t.Fatalf("no plan kind for %q", sql)
			}
			if p.Kind == Refused && p.Err == nil {
				t.Fatalf("refused without a reason: %q", sql)
			}
			if summary(p) != summary(q) {
				t.Fatalf("cached plan %s differs from fresh %s for %q", summary(p), summary(q), sql)
			}
		}
	})
}
