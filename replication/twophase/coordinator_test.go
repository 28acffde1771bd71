package twophase

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
)

// fakePart is a Participant that records its statements and answers
// them as told.
type fakePart struct {
	name     string
	readOnly bool

	mu    sync.Mutex
	stmts []string
	// fail answers statements starting with a key with the error (once
	// per entry in the slice, then the last one sticks).
	fail map[string][]error
	// tag overrides the command tag of statements starting with a key.
	tag map[string]string
}

func (f *fakePart) Shard() string  { return f.name }
func (f *fakePart) ReadOnly() bool { return f.readOnly }
func (f *fakePart) Exec(_ context.Context, sql string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stmts = append(f.stmts, sql)
	for k, errs := range f.fail {
		if strings.Contains(sql, k) && len(errs) > 0 {
			err := errs[0]
			if len(errs) > 1 {
				f.fail[k] = errs[1:]
			}
			if err != nil {
				return "", err
			}
		}
	}
	for k, t := range f.tag {
		if strings.Contains(sql, k) {
			return t, nil
		}
	}
	// The tag of the last statement.
	last := sql[strings.LastIndex(sql, "; ")+1:]
	last = strings.TrimSpace(last)
	for _, t := range []string{"PREPARE TRANSACTION", "COMMIT PREPARED", "ROLLBACK PREPARED", "COMMIT", "ROLLBACK"} {
		if strings.HasPrefix(last, t) {
			return t, nil
		}
	}
	return "INSERT 0 1", nil
}

func (f *fakePart) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.stmts)
}

// verbs returns the statements' first words up to the GID, without the
// savepoint around the commit record; a let-go record's INSERT is
// "LET GO".
func (f *fakePart) verbs() []string {
	var out []string
	for _, s := range f.got() {
		for _, part := range strings.Split(s, "; ") {
			if strings.HasSuffix(part, " "+recordSavepoint) {
				continue
			}
			if strings.Contains(part, letGoSuffix) {
				out = append(out, "LET GO")
				continue
			}
			if i := strings.Index(part, " '"); i >= 0 && !strings.HasPrefix(part, "INSERT") {
				part = part[:i]
			} else if strings.HasPrefix(part, "INSERT") {
				part = "INSERT"
			}
			out = append(out, part)
		}
	}
	return out
}

func pgErr(code string) error {
	return &pgconn.PgError{Severity: "ERROR", Code: code, Message: "boom " + code}
}

var errNet = io.ErrUnexpectedEOF

// fakeStore is a DecisionStore that records its calls.
type fakeStore struct {
	err      error
	recorded []GID
	decided  []GID
}

func (s *fakeStore) RecordSQL(gid GID) string {
	s.recorded = append(s.recorded, gid)
	return RecordStore{}.RecordSQL(gid)
}
func (s *fakeStore) LetGoSQL(gid GID) string { return RecordStore{}.LetGoSQL(gid) }
func (s *fakeStore) Decide(ctx context.Context, gid GID, dp Participant) (bool, error) {
	s.decided = append(s.decided, gid)
	if s.err != nil {
		return false, s.err
	}
	return RecordStore{}.Decide(ctx, gid, dp)
}

func newCoord(store DecisionStore) *Coordinator {
	return New("proxy-1", store, Options{RetryDelay: time.Millisecond, FinishTimeout: time.Second, TableWait: 300 * time.Millisecond}, nil)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantVerbs(t *testing.T, p *fakePart, want ...string) {
	t.Helper()
	if got := p.verbs(); !slices.Equal(got, want) {
		t.Errorf("%s got %q, want %q", p.name, got, want)
	}
}

func parts(ps ...*fakePart) []Participant {
	out := make([]Participant, len(ps))
	for i, p := range ps {
		out[i] = p
	}
	return out
}

func TestCommitTwoPhase(t *testing.T) {
	a, b, r := &fakePart{name: "s0"}, &fakePart{name: "s1"}, &fakePart{name: "s2", readOnly: true}
	st := &fakeStore{}
	out, err := newCoord(st).Commit(testCtx(t), parts(a, b, r))
	if err != nil {
		t.Fatal(err)
	}
	if !out.Committed || out.InDoubt || len(out.Pending) != 0 || out.GID == "" {
		t.Fatalf("outcome %+v", out)
	}
	p, err := ParseGID(string(out.GID))
	if err != nil || p.ShardTag != "s0" || p.ProxyTag != "proxy-1" {
		t.Fatalf("gid %s: %+v %v", out.GID, p, err)
	}
	// The decision participant records, prepares, and its COMMIT PREPARED
	// is the decision; the other commits after it; the reader in one phase.
	wantVerbs(t, a, "INSERT", "PREPARE TRANSACTION", "COMMIT PREPARED")
	wantVerbs(t, b, "PREPARE TRANSACTION", "COMMIT PREPARED")
	wantVerbs(t, r, "COMMIT")
	for _, s := range append(a.got(), b.got()...) {
		if strings.Contains(s, "PREPARE") && !strings.Contains(s, string(out.GID)) {
			t.Errorf("statement %q does not name %s", s, out.GID)
		}
	}
	if len(st.decided) != 1 || len(st.recorded) != 1 {
		t.Errorf("store calls: recorded %v decided %v", st.recorded, st.decided)
	}
}

func TestCommitOnePhase(t *testing.T) {
	w, r := &fakePart{name: "s0"}, &fakePart{name: "s1", readOnly: true}
	out, err := newCoord(&fakeStore{}).Commit(testCtx(t), parts(w, r))
	if err != nil || !out.Committed || out.GID != "" {
		t.Fatalf("outcome %+v, %v", out, err)
	}
	wantVerbs(t, w, "COMMIT")
	wantVerbs(t, r, "COMMIT")

	// A reader that cannot commit (serialization failure) rolls the writer back.
	w, r = &fakePart{name: "s0"}, &fakePart{name: "s1", readOnly: true, fail: map[string][]error{"COMMIT": {pgErr("40001")}}}
	out, err = newCoord(&fakeStore{}).Commit(testCtx(t), parts(w, r))
	var ae *AbortError
	if !errors.As(err, &ae) || ae.Shard != "s1" || ae.SQLState() != "40001" || out.Committed {
		t.Fatalf("outcome %+v, %v", out, err)
	}
	wantVerbs(t, w, "ROLLBACK")
	wantVerbs(t, r, "COMMIT", "ROLLBACK")
}

func TestPrepareFails(t *testing.T) {
	a := &fakePart{name: "s0"}
	b := &fakePart{name: "s1", fail: map[string][]error{"PREPARE": {pgErr("40001")}}}
	c := &fakePart{name: "s2"}
	out, err := newCoord(&fakeStore{}).Commit(testCtx(t), parts(a, b, c))
	var ae *AbortError
	if !errors.As(err, &ae) || ae.Shard != "s1" || ae.SQLState() != "40001" {
		t.Fatalf("err %v", err)
	}
	if out.Committed || out.InDoubt || len(out.Pending) != 0 {
		t.Fatalf("outcome %+v", out)
	}
	wantVerbs(t, a, "INSERT", "PREPARE TRANSACTION", "ROLLBACK PREPARED")
	wantVerbs(t, b, "PREPARE TRANSACTION", "ROLLBACK")
	wantVerbs(t, c, "PREPARE TRANSACTION", "ROLLBACK PREPARED")
}

func TestPrepareOnFailedTransaction(t *testing.T) {
	// PREPARE TRANSACTION in a failed transaction is answered ROLLBACK.
	a := &fakePart{name: "s0"}
	b := &fakePart{name: "s1", tag: map[string]string{"PREPARE": "ROLLBACK"}}
	_, err := newCoord(&fakeStore{}).Commit(testCtx(t), parts(a, b))
	var ae *AbortError
	if !errors.As(err, &ae) || ae.Shard != "s1" || ae.SQLState() != "25P02" {
		t.Fatalf("err %v", err)
	}
	wantVerbs(t, a, "INSERT", "PREPARE TRANSACTION", "ROLLBACK PREPARED")
}

func TestPrepareUncertain(t *testing.T) {
	a := &fakePart{name: "s0"}
	b := &fakePart{name: "s1", fail: map[string][]error{"PREPARE": {errNet}}}
	out, err := newCoord(&fakeStore{}).Commit(testCtx(t), parts(a, b))
	var ae *AbortError
	if !errors.As(err, &ae) || ae.Shard != "s1" || ae.SQLState() != "40000" {
		t.Fatalf("err %v", err)
	}
	// s1 may hold a prepared transaction: recovery's (undecided: rolled back).
	if !slices.Equal(out.Pending, []string{"s1"}) || out.Committed {
		t.Fatalf("outcome %+v", out)
	}
	// So the coordinator records, on the decision shard (rolled back),
	// that it lets go of it: recovery resolves it at once.
	if out.LetGo != "s0" {
		t.Fatalf("let-go record on %q, want s0", out.LetGo)
	}
	wantVerbs(t, a, "INSERT", "PREPARE TRANSACTION", "ROLLBACK PREPARED", "LET GO")
	wantVerbs(t, b, "PREPARE TRANSACTION")

	// The decision participant's PREPARE lost: the let-go record goes to
	// the other writer, rolled back.
	a = &fakePart{name: "s0", fail: map[string][]error{"PREPARE": {errNet}}}
	b = &fakePart{name: "s1"}
	out, err = newCoord(RecordStore{}).Commit(testCtx(t), parts(a, b))
	if !errors.As(err, &ae) || ae.Shard != "s0" || out.LetGo != "s1" || !slices.Equal(out.Pending, []string{"s0"}) {
		t.Fatalf("outcome %+v, err %v", out, err)
	}
	wantVerbs(t, a, "INSERT", "PREPARE TRANSACTION")
	wantVerbs(t, b, "PREPARE TRANSACTION", "ROLLBACK PREPARED", "LET GO")
}

func TestDecisionNotMade(t *testing.T) {
	// The decision participant's COMMIT PREPARED answered with an error
	// (recovery rolled it back): not decided, everything rolls back.
	a := &fakePart{name: "s0", fail: map[string][]error{"COMMIT PREPARED": {pgErr("42704")}}}
	b := &fakePart{name: "s1"}
	out, err := newCoord(RecordStore{}).Commit(testCtx(t), parts(a, b))
	var ae *AbortError
	if !errors.As(err, &ae) || ae.Shard != "s0" || ae.SQLState() != "42704" || out.Committed || out.InDoubt {
		t.Fatalf("outcome %+v, err %v", out, err)
	}
	wantVerbs(t, a, "INSERT", "PREPARE TRANSACTION", "COMMIT PREPARED", "ROLLBACK PREPARED")
	wantVerbs(t, b, "PREPARE TRANSACTION", "ROLLBACK PREPARED")

	// A store that fails outright.
	a, b = &fakePart{name: "s0"}, &fakePart{name: "s1"}
	_, err = newCoord(&fakeStore{err: errors.New("store down")}).Commit(testCtx(t), parts(a, b))
	if !errors.As(err, &ae) {
		t.Fatalf("err %v", err)
	}
	wantVerbs(t, a, "INSERT", "PREPARE TRANSACTION", "ROLLBACK PREPARED")
	wantVerbs(t, b, "PREPARE TRANSACTION", "ROLLBACK PREPARED")
}

func TestDecisionUncertain(t *testing.T) {
	a := &fakePart{name: "s0", fail: map[string][]error{"COMMIT PREPARED": {errNet}}}
	b := &fakePart{name: "s1"}
	out, err := newCoord(RecordStore{}).Commit(testCtx(t), parts(a, b))
	var de *InDoubtError
	if !errors.As(err, &de) || de.SQLState() != "08007" || de.GID != out.GID {
		t.Fatalf("err %v", err)
	}
	if !out.InDoubt || out.Committed || !slices.Equal(out.Pending, []string{"s0", "s1"}) {
		t.Fatalf("outcome %+v", out)
	}
	// Nothing else is done but the let-go record on the other (prepared)
	// writer: recovery decides from the decision shard.
	wantVerbs(t, a, "INSERT", "PREPARE TRANSACTION", "COMMIT PREPARED")
	wantVerbs(t, b, "PREPARE TRANSACTION", "LET GO")
	if out.LetGo != "s1" {
		t.Fatalf("let-go record on %q, want s1", out.LetGo)
	}
}

func TestCommitPreparedFails(t *testing.T) {
	// After the decision: a lost connection is left to recovery at once,
	// a server error is retried, "no such prepared transaction" is done.
	lost := &fakePart{name: "s1", fail: map[string][]error{"COMMIT PREPARED": {errNet}}}
	flaky := &fakePart{name: "s2", fail: map[string][]error{"COMMIT PREPARED": {pgErr("53200"), nil}}}
	stuck := &fakePart{name: "s3", fail: map[string][]error{"COMMIT PREPARED": {pgErr("53200")}}}
	gone := &fakePart{name: "s4", fail: map[string][]error{"COMMIT PREPARED": {pgErr("42704")}}}
	dp := &fakePart{name: "s0"}
	out, err := newCoord(RecordStore{}).Commit(testCtx(t), parts(dp, lost, flaky, stuck, gone))
	if err != nil {
		t.Fatal(err)
	}
	if !out.Committed || !slices.Equal(out.Pending, []string{"s1", "s3"}) {
		t.Fatalf("outcome %+v", out)
	}
	wantVerbs(t, lost, "PREPARE TRANSACTION", "COMMIT PREPARED")
	wantVerbs(t, flaky, "PREPARE TRANSACTION", "COMMIT PREPARED", "COMMIT PREPARED")
	wantVerbs(t, stuck, "PREPARE TRANSACTION", "COMMIT PREPARED", "COMMIT PREPARED", "COMMIT PREPARED")
	wantVerbs(t, gone, "PREPARE TRANSACTION", "COMMIT PREPARED")
}

func TestOnOutcome(t *testing.T) {
	c := newCoord(RecordStore{})
	var got []Outcome
	c.OnOutcome = func(o Outcome) { got = append(got, o) }
	if _, err := c.Commit(testCtx(t), parts(&fakePart{name: "a"}, &fakePart{name: "b"})); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[0].Committed || got[0].Prepare <= 0 || got[0].Decide <= 0 {
		t.Fatalf("outcomes %+v", got)
	}
}

func TestGID(t *testing.T) {
	g, err := NewGID("proxy/1", "shard'0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseGID(string(g))
	if err != nil || p.ShardTag != ShardTag("shard'0") || p.ProxyTag != ProxyTag("proxy/1") || len(p.TxID) != 24 {
		t.Fatalf("%s: %+v %v", g, p, err)
	}
	g2, _ := NewGID("proxy/1", "shard'0")
	if g2 == g {
		t.Fatal("two GIDs alike")
	}
	// The incarnation of this process leads the transaction id.
	if p.Incarnation != Incarnation() || !validIncarnation(Incarnation()) || p.TxID[:12] != Incarnation() {
		t.Fatalf("%s: incarnation %q, process %q", g, p.Incarnation, Incarnation())
	}
	c := New("proxy-1", RecordStore{}, Options{Incarnation: "0123456789ab"}, nil)
	a, b := &fakePart{name: "s0"}, &fakePart{name: "s1"}
	out, err := c.Commit(testCtx(t), parts(a, b))
	if p, perr := ParseGID(string(out.GID)); err != nil || perr != nil || p.Incarnation != "0123456789ab" {
		t.Fatalf("%s: %+v %v %v", out.GID, p, err, perr)
	}
	long := strings.Repeat("x/", 200)
	g, err = NewGID(long, long)
	if err != nil || len(g) > MaxGIDLen {
		t.Fatalf("%d bytes: %s %v", len(g), g, err)
	}
	if p, err = ParseGID(string(g)); err != nil || p.ProxyTag != ProxyTag(long) || !strings.HasPrefix(p.ProxyTag, "~") {
		t.Fatalf("%+v %v", p, err)
	}
	for _, bad := range []string{"other", "pgshard/1/zz/s/p", "pgshard/1/0123456789abcdef01234567/s", "pgshard/1/0123456789abcdef0123456g/s/p"} {
		if _, err := ParseGID(bad); err == nil {
			t.Errorf("ParseGID(%q) accepted", bad)
		}
	}
	// A name that looks like a hashed tag is hashed too: no two names share a tag.
	if ShardTag("~abc") == "~abc" {
		t.Error("~abc kept as its own tag")
	}
}

func TestAbortNoDecisionTable(t *testing.T) {
	// The table never appears: after TableWait, 42P01 with a hint.
	a := &fakePart{name: "s0", fail: map[string][]error{"INSERT": {pgErr("42P01")}}}
	start := time.Now()
	_, err := newCoord(RecordStore{}).Commit(testCtx(t), parts(a, &fakePart{name: "s1"}))
	var ae *AbortError
	if !errors.As(err, &ae) || ae.SQLState() != "42P01" || !strings.Contains(err.Error(), "does the meta cluster have a PostgreSQL role?") {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("gave up after %s, want TableWait (300ms)", d)
	}
}

func TestDecisionTableAppears(t *testing.T) {
	// The decision table is missing for the first two attempts (the meta
	// leader creates it meanwhile): the record's INSERT is rolled back to
	// its savepoint and retried, and the transaction commits.
	a := &fakePart{name: "s0", fail: map[string][]error{"INSERT": {pgErr("42P01"), pgErr("3F000"), nil}}}
	b := &fakePart{name: "s1"}
	out, err := newCoord(RecordStore{}).Commit(testCtx(t), parts(a, b))
	if err != nil || !out.Committed {
		t.Fatalf("outcome %+v, err %v", out, err)
	}
	rec := "SAVEPOINT pgshard_record; INSERT INTO pgshard.commit_decisions (gid) VALUES ('" + string(out.GID) + "'); RELEASE SAVEPOINT pgshard_record; PREPARE TRANSACTION '" + string(out.GID) + "'"
	back := "ROLLBACK TO SAVEPOINT pgshard_record; RELEASE SAVEPOINT pgshard_record"
	if got, want := a.got(), []string{rec, back, rec, back, rec, "COMMIT PREPARED '" + string(out.GID) + "'"}; !slices.Equal(got, want) {
		t.Fatalf("s0 got\n%q\nwant\n%q", got, want)
	}
	wantVerbs(t, b, "PREPARE TRANSACTION", "COMMIT PREPARED")
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	c := newCoord(RecordStore{})
	c.OnOutcome = m.Observe
	ctx := testCtx(t)
	if _, err := c.Commit(ctx, parts(&fakePart{name: "a"}, &fakePart{name: "b"})); err != nil {
		t.Fatal(err)
	}
	_, _ = c.Commit(ctx, parts(&fakePart{name: "a"}, &fakePart{name: "b", fail: map[string][]error{"PREPARE": {pgErr("40001")}}}))
	_, _ = c.Commit(ctx, parts(&fakePart{name: "a", fail: map[string][]error{"COMMIT PREPARED": {errNet}}}, &fakePart{name: "b"}))
	_, _ = c.Commit(ctx, parts(&fakePart{name: "a"}, &fakePart{name: "b", fail: map[string][]error{"COMMIT PREPARED": {errNet}}}))
	_, _ = c.Commit(ctx, parts(&fakePart{name: "a"})) // one phase: not counted
	for outcome, want := range map[string]float64{"committed": 1, "aborted": 1, "in_doubt": 1, "pending": 1} {
		if got := promtestutil.ToFloat64(m.commits.WithLabelValues(outcome)); got != want {
			t.Errorf("%s: %v, want %v", outcome, got, want)
		}
	}
	if n, err := promtestutil.GatherAndCount(reg, "pgshard_twophase_decision_seconds"); err != nil || n != 1 {
		t.Errorf("decision histogram: %d %v", n, err)
	}
}
