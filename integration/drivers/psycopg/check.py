#!/usr/bin/env python3
"""psycopg2 through a sharded pgshard in transaction pooling.

Run by integration/drivers (TestDrivers): connection settings come from the
libpq environment (PGHOST, PGPORT, ...), DRV_BASE and DRV_SPLIT give this
program's keys: base+i lives on shard s0, split+base+i on s1. Every answer
is checked here; the first unexpected one exits non-zero. The last line is
RESULT statements=N refusals=N rows=N users=N orders=N, which the test
compares with what it finds on each shard's primary.
"""
import io
import os
import sys
import threading
import time

import psycopg2
import psycopg2.errors
import psycopg2.extras

BASE = int(os.environ["DRV_BASE"])
SPLIT = int(os.environ["DRV_SPLIT"])

statements = 0
refusals = 0
rows_back = 0
users = 0   # rows of users this program expects to leave
orders = 0  # rows of orders this program expects to leave


def s0(i):
    return BASE + i


def s1(i):
    return SPLIT + BASE + i


def fail(msg):
    print("FAIL:", msg, flush=True)
    sys.exit(1)


def expect(cond, msg):
    if not cond:
        fail(msg)


def run(cur, sql, args=None):
    """Executes one statement, counts it and the rows that came back; a
    0A000 refusal is counted and re-raised."""
    global statements, refusals, rows_back
    statements += 1
    try:
        cur.execute(sql, args)
    except psycopg2.Error as e:
        if e.pgcode == "0A000":
            refusals += 1
        raise
    if cur.description is not None:
        rows = cur.fetchall()
        rows_back += len(rows)
        return rows
    return None


def expect_error(cur, sql, args, sqlstate, what):
    try:
        run(cur, sql, args)
    except psycopg2.Error as e:
        expect(e.pgcode == sqlstate, "%s: got %s %s, want %s" % (what, e.pgcode, e, sqlstate))
        return
    fail("%s: no error, want %s" % (what, sqlstate))


def connect():
    c = psycopg2.connect("")
    c.autocommit = True
    return c


def main():
    global users, orders, statements, rows_back
    conn = connect()
    cur = conn.cursor()

    # A SET that must follow the client to whichever server connection
    # (and shard) runs its next statements.
    run(cur, "SET statement_timeout = '47s'")
    run(cur, "SET TimeZone = 'Asia/Tokyo'")

    # Autocommit writes and reads alternating between the shards, each
    # checked, with the settings read back on both shards now and then.
    n = 250
    for i in range(n):
        for k in (s0(i), s1(i)):
            run(cur, "INSERT INTO users (id, name) VALUES (%s, %s)", (k, "user %d" % k))
            users += 1
        for k in (s0(i), s1(i)):
            got = run(cur, "SELECT id, name FROM users WHERE id = %s", (k,))
            expect(got == [(k, "user %d" % k)], "read back %d: %r" % (k, got))
        if i % 20 == 0:
            for k in (s0(i), s1(i)):
                got = run(cur, "SELECT current_setting('statement_timeout'), current_setting('TimeZone') FROM users WHERE id = %s", (k,))
                expect(got == [("47s", "Asia/Tokyo")], "settings on the shard of %d: %r" % (k, got))
            got = run(cur, "SHOW statement_timeout")
            expect(got == [("47s",)], "SHOW statement_timeout: %r" % got)

    # Transactions: one rolled back, one with a savepoint rolled back, one
    # committed; on each shard.
    conn.autocommit = False
    for side in (s0, s1):
        run(cur, "INSERT INTO users (id, name) VALUES (%s, 'rolled back')", (side(1000),))
        run(cur, "UPDATE users SET note = 'rolled back' WHERE id = %s", (side(0),))
        conn.rollback()
        run(cur, "INSERT INTO users (id, name) VALUES (%s, 'committed')", (side(1001),))
        run(cur, "SAVEPOINT a")
        run(cur, "INSERT INTO users (id, name) VALUES (%s, 'rolled back to a savepoint')", (side(1002),))
        run(cur, "ROLLBACK TO SAVEPOINT a")
        got = run(cur, "SELECT count(*) FROM users WHERE id IN (%s, %s, %s)", (side(1000), side(1001), side(1002)))
        expect(got == [(1,)], "inside the transaction: %r" % got)
        conn.commit()
        users += 1
    conn.autocommit = True
    for side in (s0, s1):
        got = run(cur, "SELECT id, name, note FROM users WHERE id IN (%s, %s, %s, %s) ORDER BY id",
                  (side(0), side(1000), side(1001), side(1002)))
        expect(got == [(side(0), "user %d" % side(0), None), (side(1001), "committed", None)], "after the transactions: %r" % got)

    # set_session: a read-only, repeatable-read transaction (psycopg2
    # sends the options with BEGIN) on s1: a write fails with 25006.
    conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    got = run(cur, "SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only') FROM users WHERE id = %s", (s1(0),))
    expect(got == [("repeatable read", "on")], "set_session transaction: %r" % got)
    expect_error(cur, "INSERT INTO users (id, name) VALUES (%s, 'rolled back read-only')", (s1(1004),), "25006", "write in a read-only transaction")
    conn.rollback()
    conn.set_session(isolation_level="DEFAULT", readonly="DEFAULT")
    # A client encoding the proxy must keep for the client.
    conn.set_client_encoding("LATIN1")
    statements += 1
    run(cur, "INSERT INTO users (id, name) VALUES (%s, %s)", (s0(1005), "caf\u00e9"))
    users += 1
    got = run(cur, "SELECT name, current_setting('client_encoding') FROM users WHERE id = %s", (s0(1005),))
    expect(got == [("caf\u00e9", "LATIN1")], "LATIN1 round trip: %r" % got)
    got = run(cur, "SELECT current_setting('client_encoding') FROM users WHERE id = %s", (s1(0),))
    expect(got == [("LATIN1",)], "client_encoding on s1: %r" % got)
    conn.set_client_encoding("UTF8")
    statements += 1

    # An error mid-transaction: the transaction is aborted (25P02) until
    # ROLLBACK, its writes are gone, and the session works on both shards.
    conn.autocommit = False
    for side, other in ((s0, s1), (s1, s0)):
        run(cur, "INSERT INTO users (id, name) VALUES (%s, 'rolled back after an error')", (side(1003),))
        expect_error(cur, "SELECT 1/0 FROM users WHERE id = %s", (side(0),), "22012", "division by zero")
        expect_error(cur, "SELECT name FROM users WHERE id = %s", (side(0),), "25P02", "same shard after the error")
        expect_error(cur, "SELECT name FROM users WHERE id = %s", (other(0),), "25P02", "other shard after the error")
        conn.rollback()
    conn.autocommit = True
    got = run(cur, "SELECT count(*) FROM users WHERE id IN (%s, %s)", (s0(1003), s1(1003)))
    expect(got == [(0,)], "rows of the failed transactions: %r" % got)

    # Batches: executemany (one statement per row, alternating shards) and
    # execute_values (multi-row INSERTs split over the shards).
    rows = []
    for i in range(2000, 2040):
        rows.append((s0(i), "batch %d" % s0(i)))
        rows.append((s1(i), "batch %d" % s1(i)))
    statements += len(rows)
    cur.executemany("INSERT INTO users (id, name) VALUES (%s, %s)", rows)
    users += len(rows)
    rows2 = []
    for i in range(2100, 2150):
        rows2.append((s0(i), "values %d" % s0(i)))
        rows2.append((s1(i), "values %d" % s1(i)))
    statements += 1
    psycopg2.extras.execute_values(cur, "INSERT INTO users (id, name) VALUES %s", rows2, page_size=1000)
    users += len(rows2)
    got = run(cur, "SELECT count(*) FROM users WHERE id BETWEEN %s AND %s", (s1(2100), s1(2149)))
    expect(got == [(50,)], "execute_values rows on s1: %r" % got)
    # execute_batch joins statements into one query string ("INSERT
    # ...;INSERT ..."): it runs when all of them are for one shard (one
    # batch per shard here); a string over both shards is refused with
    # 0A000 before any of it runs (README, Compatibility).
    for side_of in (s0, s1):
        rows3 = [(side_of(i), "joined %d" % side_of(i)) for i in range(2200, 2230)]
        statements += len(rows3)
        psycopg2.extras.execute_batch(cur, "INSERT INTO users (id, name) VALUES (%s, %s)", rows3, page_size=10)
        users += len(rows3)
        got = run(cur, "SELECT count(*) FROM users WHERE id BETWEEN %s AND %s", (side_of(2200), side_of(2229)))
        expect(got == [(30,)], "execute_batch rows: %r" % got)
    try:
        statements += 2
        psycopg2.extras.execute_batch(cur, "INSERT INTO users (id, name) VALUES (%s, %s)",
                                      [(s0(2240), "mixed"), (s1(2240), "mixed")])
        fail("execute_batch over both shards: no error, want 0A000")
    except psycopg2.Error as e:
        expect(e.pgcode == "0A000", "execute_batch over both shards: got %s %s" % (e.pgcode, e))
    got = run(cur, "SELECT count(*) FROM users WHERE id IN (%s, %s)", (s0(2240), s1(2240)))
    expect(got == [(0,)], "rows of the refused execute_batch: %r" % got)
    # A multi-row INSERT with RETURNING over both shards: rows come back in
    # VALUES order.
    got = run(cur, "INSERT INTO users (id, name) VALUES (%s, 'r'), (%s, 'r'), (%s, 'r') RETURNING id",
              (s1(2300), s0(2300), s1(2301)))
    expect(got == [(s1(2300),), (s0(2300),), (s1(2301),)], "RETURNING over both shards: %r" % got)
    users += 3

    # COPY in (split by key over the shards) and out.
    buf = io.StringIO()
    copied = 0
    for i in range(0, 100):
        for k in (s0(i), s1(i)):
            for j in range(3):
                buf.write("%d,%d,%d.%02d\n" % (k, j, j + 1, i % 100))
                copied += 1
    buf.seek(0)
    statements += 1
    cur.copy_expert("COPY orders (user_id, n, amount) FROM STDIN WITH (FORMAT csv)", buf)
    expect(cur.rowcount == copied, "COPY FROM: rowcount %d, want %d" % (cur.rowcount, copied))
    orders += copied
    out = io.StringIO()
    statements += 1
    cur.copy_expert("COPY (SELECT user_id, n, amount FROM orders WHERE user_id = %d ORDER BY n) TO STDOUT" % s1(7), out)
    expect(out.getvalue() == "%d\t0\t1.07\n%d\t1\t2.07\n%d\t2\t3.07\n" % (s1(7), s1(7), s1(7)), "COPY TO one shard: %r" % out.getvalue())
    rows_back += 3
    out = io.StringIO()
    statements += 1
    cur.copy_expert("COPY orders TO STDOUT WITH (FORMAT csv)", out)
    mine = [l for l in out.getvalue().splitlines() if BASE <= int(l.split(",")[0]) % SPLIT < BASE + 10000]
    rows_back += len(mine)
    expect(len(mine) == copied, "COPY TO over both shards: %d of my rows, want %d" % (len(mine), copied))

    # Server-side cursor (DECLARE in a transaction, FETCH in pages of
    # itersize) on the shard of its key.
    conn.autocommit = False
    named = conn.cursor(name="orders_of_one_user")
    named.itersize = 1
    statements += 1
    named.execute("SELECT n, amount FROM orders WHERE user_id = %s ORDER BY n", (s1(42),))
    got = [(r[0], str(r[1])) for r in named]
    statements += len(got) + 1  # one FETCH per row (itersize 1), one that ends it
    rows_back += len(got)
    expect(got == [(0, "1.42"), (1, "2.42"), (2, "3.42")], "named cursor: %r" % got)
    named.close()
    conn.commit()
    conn.autocommit = True

    # SQL PREPARE/EXECUTE (psycopg2 has no protocol-level prepare): it pins
    # the session to the statement's shard, so on its own connection.
    pconn = connect()
    pcur = pconn.cursor()
    run(pcur, "PREPARE get_user AS SELECT name FROM users WHERE id = %d" % s1(5))
    for _ in range(5):
        got = run(pcur, "EXECUTE get_user")
        expect(got == [("user %d" % s1(5),)], "EXECUTE: %r" % got)
    run(pcur, "DEALLOCATE get_user")
    pconn.close()

    # Cancel a statement running on one shard (s1): the client's
    # CancelRequest reaches the server that runs it; the session goes on.
    marker = "cancel-me-psycopg-%d" % BASE
    err = []

    def sleeper():
        try:
            cur.execute("SELECT pg_sleep(60), '%s' FROM users WHERE id = %%s" % marker, (s1(0),))
        except psycopg2.Error as e:
            err.append(e)

    th = threading.Thread(target=sleeper)
    statements += 1
    th.start()
    watcher = connect()
    wcur = watcher.cursor()
    deadline = time.monotonic() + 20
    while True:
        got = run(wcur, "/* pgshard: shard=s1 */ SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s AND pid <> pg_backend_pid()",
                  ("%" + marker + "%",))
        if got == [(1,)]:
            break
        expect(time.monotonic() < deadline, "the statement to cancel never showed on s1")
        time.sleep(0.05)
    conn.cancel()
    th.join(30)
    expect(not th.is_alive(), "cancelled statement still running after 30 s")
    expect(len(err) == 1 and err[0].pgcode == "57014", "cancel: %r" % err)
    got = run(cur, "SELECT name FROM users WHERE id = %s", (s1(0),))
    expect(got == [("user %d" % s1(0),)], "after the cancel: %r" % got)
    watcher.close()

    # The settings still follow the client.
    for k in (s0(3), s1(3)):
        got = run(cur, "SELECT current_setting('statement_timeout') FROM users WHERE id = %s", (k,))
        expect(got == [("47s",)], "statement_timeout at the end on the shard of %d: %r" % (k, got))

    conn.close()
    print("RESULT statements=%d refusals=%d rows=%d users=%d orders=%d" % (statements, refusals, rows_back, users, orders), flush=True)


if __name__ == "__main__":
    try:
        main()
    except psycopg2.Error as e:
        fail("%s %s (statements so far %d, refusals %d)" % (e.pgcode, e, statements, refusals))
