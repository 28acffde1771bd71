package proxy

import (
	"testing"

	"github.com/pgshard/pgshard/wire"
)

// TestDeferredSavepointRules: the savepoint statements of a deferred
// transaction get PostgreSQL's answers, and what follows the BEGIN to
// the shard is what the server must have to be in the same state.
func TestDeferredSavepointRules(t *testing.T) {
	var st sessionState
	st.openDeferred("BEGIN")
	step := func(op savepointOp, name, wantTag, wantCode string) {
		t.Helper()
		tag, err := st.deferredSavepoint(op, name)
		code := ""
		if err != nil {
			code = err.Code
		}
		if tag != wantTag || code != wantCode {
			t.Fatalf("op %d %q: tag %q code %q, want %q %q", op, name, tag, code, wantTag, wantCode)
		}
	}
	step(savepointDefine, "a", "SAVEPOINT", "")
	st.deferredSetLocal("SET LOCAL work_mem = '3MB';")
	step(savepointDefine, "b", "SAVEPOINT", "")
	st.deferredSetLocal("SET LOCAL work_mem = '4MB'")
	step(savepointDefine, "a", "SAVEPOINT", "") // a second "a": the newest is found first
	step(savepointRelease, "b", "RELEASE", "")  // drops b and the newer a, keeps the SET LOCALs
	step(savepointRollbackTo, "b", "", wire.SQLStateInvalidSavepoint)
	st.failDeferred() // as the caller does with the error (reportError)
	step(savepointDefine, "c", "", wire.SQLStateInFailedTransaction)
	step(savepointRelease, "a", "", wire.SQLStateInFailedTransaction)
	step(savepointRollbackTo, "a", "ROLLBACK", "") // recovers; undoes what followed a
	if st.deferredFailed {
		t.Fatal("ROLLBACK TO a savepoint must end the failed state")
	}
	if got, want := st.beginSent(), `SAVEPOINT "a"`; got != want {
		t.Fatalf("replay %q, want %q", got, want)
	}

	st.openDeferred("BEGIN")
	step(savepointDefine, `Q"x`, "SAVEPOINT", "")
	st.deferredSetLocal("SET LOCAL statement_timeout = '1s' -- c")
	step(savepointDefine, "z", "SAVEPOINT", "")
	step(savepointRelease, "z", "RELEASE", "")
	if got, want := st.beginSent(), "SAVEPOINT \"Q\"\"x\"\n;SET LOCAL statement_timeout = '1s' -- c"; got != want {
		t.Fatalf("replay %q, want %q", got, want)
	}
	st.openDeferred("BEGIN")
	st.failDeferred()
	step(savepointRollbackTo, "nosuch", "", wire.SQLStateInvalidSavepoint)
	if st.endDeferred(true) != "ROLLBACK" || len(st.replay) != 0 {
		t.Fatal("a failed deferred transaction ends with ROLLBACK and forgets its savepoints")
	}
}
