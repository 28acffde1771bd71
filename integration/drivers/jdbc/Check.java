// pgjdbc through a sharded pgshard in transaction pooling.
//
// Run by integration/drivers (TestDrivers), compiled there with javac:
// connection settings come from the libpq environment (PGHOST, PGPORT,
// ...), DRV_BASE and DRV_SPLIT give this program's keys: base+i lives on
// shard s0, split+base+i on s1. Every answer is checked here; the first
// unexpected one exits non-zero. The last line is RESULT statements=N
// refusals=N rows=N users=N orders=N, which the test compares with what
// it finds on each shard's primary.

import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.InputStreamReader;
import java.io.StringReader;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;

import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

public class Check {
    static final long BASE = Long.parseLong(System.getenv("DRV_BASE"));
    static final long SPLIT = Long.parseLong(System.getenv("DRV_SPLIT"));

    static int statements, refusals, rowsBack, users, orders;

    static long s0(long i) { return BASE + i; }
    static long s1(long i) { return SPLIT + BASE + i; }

    static void fail(String msg) {
        System.out.println("FAIL: " + msg + " (statements so far " + statements + ", refusals " + refusals + ")");
        System.exit(1);
    }

    static void expect(boolean cond, String msg) {
        if (!cond) fail(msg);
    }

    static Connection connect(String extra) throws SQLException {
        String url = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT") + "/" + System.getenv("PGDATABASE")
            + "?sslmode=disable&socketTimeout=60" + extra;
        return DriverManager.getConnection(url, System.getenv("PGUSER"), System.getenv("PGPASSWORD"));
    }

    interface Body { Object run() throws SQLException; }

    // counted runs one statement, counting it and a 0A000 refusal.
    static Object counted(Body b) throws SQLException {
        statements++;
        try {
            return b.run();
        } catch (SQLException e) {
            if ("0A000".equals(e.getSQLState())) refusals++;
            throw e;
        }
    }

    // rows reads a result set into strings ("a|b" per row) and counts them.
    static List<String> rows(ResultSet rs) throws SQLException {
        List<String> out = new ArrayList<>();
        int n = rs.getMetaData().getColumnCount();
        while (rs.next()) {
            StringBuilder b = new StringBuilder();
            for (int i = 1; i <= n; i++) {
                if (i > 1) b.append('|');
                b.append(rs.getString(i));
            }
            out.add(b.toString());
        }
        rs.close();
        rowsBack += out.size();
        return out;
    }

    static List<String> query(PreparedStatement ps) throws SQLException {
        return rows((ResultSet) counted(ps::executeQuery));
    }

    static List<String> query(Statement st, String sql) throws SQLException {
        return rows((ResultSet) counted(() -> st.executeQuery(sql)));
    }

    static int update(PreparedStatement ps) throws SQLException {
        return (Integer) counted(ps::executeUpdate);
    }

    static void exec(Statement st, String sql) throws SQLException {
        counted(() -> st.execute(sql));
    }

    static void expectError(Body b, String state, String what) {
        try {
            counted(b);
        } catch (SQLException e) {
            expect(state.equals(e.getSQLState()), what + ": got " + e.getSQLState() + " " + e.getMessage() + ", want " + state);
            return;
        }
        fail(what + ": no error, want " + state);
    }

    static List<String> list(String... s) { return List.of(s); }

    static final BufferedReader STDIN = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));

    // awaitParked tells the test that n of this program's connections are
    // idle and waits until it has seen the proxy park them ("GO").
    static void awaitParked(int n) throws Exception {
        System.out.println("WAIT PARKED " + n);
        System.out.flush();
        String line = STDIN.readLine();
        expect("GO".equals(line), "waiting for " + n + " parked sessions: the test answered " + line);
    }

    public static void main(String[] args) throws Exception {
        try {
            run();
        } catch (SQLException e) {
            fail(e.getSQLState() + " " + e);
        }
        System.out.println("RESULT statements=" + statements + " refusals=" + refusals + " rows=" + rowsBack + " users=" + users + " orders=" + orders);
    }

    static void run() throws Exception {
        // Server-side prepared statements with prepareThreshold 0 (never
        // named), 1 (named from the first use) and 5 (named from the
        // fifth): autocommit writes and reads alternating between the
        // shards, with a SET that must follow the client.
        long from = 0;
        for (int threshold : new int[] {0, 1, 5}) {
            try (Connection c = connect("&prepareThreshold=" + threshold)) {
                Statement st = c.createStatement();
                exec(st, "SET statement_timeout = '47s'");
                PreparedStatement ins = c.prepareStatement("INSERT INTO users (id, name) VALUES (?, ?)");
                PreparedStatement get = c.prepareStatement("SELECT id, name FROM users WHERE id = ?");
                // setTransactionIsolation: SET SESSION CHARACTERISTICS, which
            // must follow the client too.
            c.setTransactionIsolation(Connection.TRANSACTION_REPEATABLE_READ);
            statements++;
            PreparedStatement set = c.prepareStatement("SELECT current_setting('statement_timeout') FROM users WHERE id = ?");
                for (long i = from; i < from + 90; i++) {
                    for (long k : new long[] {s0(i), s1(i)}) {
                        ins.setLong(1, k);
                        ins.setString(2, "user " + k);
                        expect(update(ins) == 1, "insert " + k);
                        users++;
                    }
                    for (long k : new long[] {s0(i), s1(i)}) {
                        get.setLong(1, k);
                        List<String> got = query(get);
                        expect(got.equals(list(k + "|user " + k)), "prepareThreshold=" + threshold + ": read back " + k + ": " + got);
                    }
                    if (i % 15 == 0) {
                        for (long k : new long[] {s0(i), s1(i)}) {
                            set.setLong(1, k);
                            List<String> got = query(set);
                            expect(got.equals(list("47s")), "prepareThreshold=" + threshold + ": statement_timeout on the shard of " + k + ": " + got);
                        }
                    }
                }
            }
            from += 100;
        }

        try (Connection c = connect("")) {
            Statement st = c.createStatement();
            exec(st, "SET statement_timeout = '47s'");
            PreparedStatement ins = c.prepareStatement("INSERT INTO users (id, name) VALUES (?, ?)");
            PreparedStatement get = c.prepareStatement("SELECT name FROM users WHERE id = ?");
            PreparedStatement count = c.prepareStatement("SELECT count(*) FROM users WHERE id IN (?, ?, ?)");

            // Transactions: rolled back, a savepoint rolled back, committed.
            c.setAutoCommit(false);
            for (int side = 0; side < 2; side++) {
                long k0 = side == 0 ? s0(1000) : s1(1000);
                ins.setLong(1, k0);
                ins.setString(2, "rolled back");
                update(ins);
                c.rollback();
                ins.setLong(1, k0 + 1);
                ins.setString(2, "committed");
                update(ins);
                Savepoint sp = (Savepoint) counted(c::setSavepoint);
                ins.setLong(1, k0 + 2);
                ins.setString(2, "rolled back to a savepoint");
                update(ins);
                counted(() -> { c.rollback(sp); return null; });
                count.setLong(1, k0);
                count.setLong(2, k0 + 1);
                count.setLong(3, k0 + 2);
                List<String> got = query(count);
                expect(got.equals(list("1")), "inside the transaction: " + got);
                c.commit();
                users++;
            }

            // An error mid-transaction, then a statement for the same
            // shard and one for the other (25P02), then ROLLBACK.
            for (int side = 0; side < 2; side++) {
                long here = side == 0 ? s0(0) : s1(0);
                long there = side == 0 ? s1(0) : s0(0);
                ins.setLong(1, here + 1003);
                ins.setString(2, "rolled back after an error");
                update(ins);
                PreparedStatement div = c.prepareStatement("SELECT 1/0 FROM users WHERE id = ?");
                div.setLong(1, here);
                expectError(div::executeQuery, "22012", "division by zero");
                get.setLong(1, here);
                expectError(get::executeQuery, "25P02", "same shard after the error");
                get.setLong(1, there);
                expectError(get::executeQuery, "25P02", "other shard after the error");
                c.rollback();
                get.setLong(1, there);
                List<String> got = query(get);
                expect(got.equals(list("user " + there)), "after the rollback: " + got);
                c.commit();
            }
            // A failed Parse for the other shard inside a transaction.
            get.setLong(1, s0(1));
            query(get);
            PreparedStatement bad = c.prepareStatement("SELECT nosuchcol FROM users WHERE id = ?");
            bad.setLong(1, s1(1));
            expectError(bad::executeQuery, "42703", "unknown column");
            c.rollback();
            c.setAutoCommit(true);
            count.setLong(1, s0(1003));
            count.setLong(2, s1(1003));
            count.setLong(3, s1(1003));
            List<String> failed = query(count);
            expect(failed.equals(list("0")), "rows of the failed transactions: " + failed);

            // DatabaseMetaData, outside a transaction and inside one that
            // runs on s1.
            DatabaseMetaData md = c.getMetaData();
            List<String> tables = rows((ResultSet) counted(() -> md.getTables(null, "public", "users", new String[] {"TABLE"})));
            expect(tables.size() == 1 && tables.get(0).contains("|users|TABLE|"), "getTables: " + tables);
            List<String> cols = rows((ResultSet) counted(() -> md.getColumns(null, "public", "orders", null)));
            expect(cols.size() == 3, "getColumns(orders): " + cols);
            List<String> pk = rows((ResultSet) counted(() -> md.getPrimaryKeys(null, "public", "users")));
            expect(pk.size() == 1 && pk.get(0).contains("|users|id|"), "getPrimaryKeys(users): " + pk);
            c.setAutoCommit(false);
            get.setLong(1, s1(2));
            query(get);
            tables = rows((ResultSet) counted(() -> md.getTables(null, "public", "orders", null)));
            expect(tables.size() == 1, "getTables in a transaction on s1: " + tables);
            c.commit();
            c.setAutoCommit(true);
        }

        // Batches: with reWriteBatchedInserts (one multi-row INSERT split
        // over the shards) and without (one Bind/Execute per row, one
        // Sync for the batch).
        try (Connection c = connect("&reWriteBatchedInserts=true")) {
            PreparedStatement ins = c.prepareStatement("INSERT INTO users (id, name) VALUES (?, ?)");
            for (long i = 2000; i < 2040; i++) {
                for (long k : new long[] {s0(i), s1(i)}) {
                    ins.setLong(1, k);
                    ins.setString(2, "rewritten batch");
                    ins.addBatch();
                }
            }
            counted(ins::executeBatch);
            users += 80;
            PreparedStatement multi = c.prepareStatement("INSERT INTO users (id, name) VALUES (?, 'multi'), (?, 'multi'), (?, 'multi')");
            multi.setLong(1, s1(2100));
            multi.setLong(2, s0(2100));
            multi.setLong(3, s1(2101));
            expect(update(multi) == 3, "executeUpdate of a multi-row INSERT over both shards");
            users += 3;
        }
        try (Connection c = connect("")) {
            exec(c.createStatement(), "SET statement_timeout = '47s'");
            PreparedStatement ins = c.prepareStatement("INSERT INTO users (id, name) VALUES (?, ?)");
            List<String> got;
            // One shard per batch: a batch's entries share one Sync, so
            // over several shards it is refused (README, Compatibility).
            for (int side = 0; side < 2; side++) {
                for (long i = 2200; i < 2230; i++) {
                    ins.setLong(1, side == 0 ? s0(i) : s1(i));
                    ins.setString(2, "batch");
                    ins.addBatch();
                }
                int[] n = (int[]) counted(ins::executeBatch);
                expect(n.length == 30, "batch of 30: " + n.length + " results");
                users += 30;
            }
            // A batch over both shards without rewriting is one implicit
            // transaction (one Sync): refused with 0A000 and a hint in
            // JDBC terms, before any entry takes effect.
            for (long k : new long[] {s0(2240), s1(2240)}) {
                ins.setLong(1, k);
                ins.setString(2, "mixed batch");
                ins.addBatch();
            }
            statements += 2;
            try {
                ins.executeBatch();
                fail("executeBatch over both shards: no error, want 0A000");
            } catch (java.sql.BatchUpdateException e) {
                SQLException next = e.getNextException();
                String msg = next == null ? e.getMessage() : next.getMessage();
                expect(next != null && "0A000".equals(next.getSQLState()) && msg.contains("reWriteBatchedInserts"),
                    "executeBatch over both shards: " + (next == null ? e.getSQLState() : next.getSQLState()) + " " + msg);
            }
            ins.clearBatch();
            got = query(c.createStatement(), "SELECT count(*) FROM users WHERE id IN (" + s0(2240) + ", " + s1(2240) + ")");
            expect(got.equals(list("0")), "rows of the refused batch: " + got);
            // autosave=always: a SAVEPOINT before every statement of a
            // transaction, the first one before any shard is chosen; the
            // transaction runs on s1, and an error there rolls back to
            // the savepoint only.
            try (Connection a = connect("&autosave=always")) {
                a.setAutoCommit(false);
                PreparedStatement get = a.prepareStatement("SELECT name FROM users WHERE id = ?");
                get.setLong(1, s1(2200));
                got = query(get);
                expect(got.equals(list("batch")), "autosave read on s1: " + got);
                PreparedStatement upd = a.prepareStatement("UPDATE users SET note = 'autosave' WHERE id = ?");
                upd.setLong(1, s1(2201));
                expect(update(upd) == 1, "autosave update on s1");
                expectError(() -> a.createStatement().executeQuery("SELECT 1/0 FROM users WHERE id = " + s1(2202)), "22012", "autosave error");
                upd.setLong(1, s1(2203));
                expect(update(upd) == 1, "autosave update after the error");
                a.commit();
                got = query(a.prepareStatement("SELECT count(*) FROM users WHERE note = 'autosave' AND id IN (" + s1(2201) + ", " + s1(2203) + ")"));
                expect(got.equals(list("2")), "autosave rows: " + got);
                a.commit();
            }
            // A batch inside a transaction, rolled back.
            c.setAutoCommit(false);
            for (long i = 2300; i < 2310; i++) {
                ins.setLong(1, s1(i));
                ins.setString(2, "rolled back batch");
                ins.addBatch();
            }
            counted(ins::executeBatch);
            c.rollback();
            c.setAutoCommit(true);
            got = query(c.createStatement(), "SELECT count(*) FROM users WHERE name IN ('rewritten batch', 'batch', 'rolled back batch') AND id % " + SPLIT + " BETWEEN " + BASE + " AND " + (BASE + 9999));
            expect(got.equals(list("140")), "batch rows: " + got);

            // COPY in (split by key over the shards) and out.
            CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
            StringBuilder text = new StringBuilder();
            int copied = 0;
            for (int i = 0; i < 100; i++) {
                for (long k : new long[] {s0(i), s1(i)}) {
                    for (int j = 0; j < 3; j++) {
                        text.append(k).append('\t').append(j).append('\t').append(j + 1).append('.').append(String.format("%02d", i)).append('\n');
                        copied++;
                    }
                }
            }
            long in = (Long) counted(() -> {
                try {
                    return cm.copyIn("COPY orders (user_id, n, amount) FROM STDIN", new StringReader(text.toString()));
                } catch (java.io.IOException e) {
                    throw new SQLException(e);
                }
            });
            expect(in == copied, "COPY FROM: " + in + " rows, want " + copied);
            orders += copied;
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            counted(() -> {
                try {
                    return cm.copyOut("COPY orders TO STDOUT", out);
                } catch (java.io.IOException e) {
                    throw new SQLException(e);
                }
            });
            int mine = 0;
            for (String l : out.toString().split("\n")) {
                if (l.isEmpty()) continue;
                long k = Long.parseLong(l.split("\t")[0]) % SPLIT;
                if (k >= BASE && k < BASE + 10000) mine++;
            }
            rowsBack += mine;
            expect(mine == copied, "COPY TO over both shards: " + mine + " of my rows, want " + copied);

            // Fetching in parts (setFetchSize: Execute with a row limit,
            // PortalSuspended) inside a transaction, on one shard.
            c.setAutoCommit(false);
            PreparedStatement some = c.prepareStatement("SELECT n, amount FROM orders WHERE user_id = ? ORDER BY n");
            some.setFetchSize(2);
            some.setLong(1, s1(7));
            List<String> parts = query(some);
            expect(parts.equals(list("0|1.07", "1|2.07", "2|3.07")), "fetch size 2: " + parts);
            c.commit();
            c.setAutoCommit(true);

            // A migration-style DDL script through the default (extended)
            // protocol: a table outside the map, so on every shard.
            Statement st = c.createStatement();
            String T = "jdbc_audit_" + BASE;
            for (String ddl : new String[] {
                "CREATE TABLE " + T + " (id bigint PRIMARY KEY, user_id bigint, what text)",
                "ALTER TABLE " + T + " ADD COLUMN created timestamptz DEFAULT now()",
                "CREATE INDEX " + T + "_user_ix ON " + T + " (user_id)",
                "CREATE INDEX " + T + "_what_ix ON " + T + " (what)",
                "ALTER INDEX " + T + "_what_ix RENAME TO " + T + "_what_ix2",
                "DROP INDEX " + T + "_what_ix2",
                "CREATE SEQUENCE " + T + "_seq",
                "DROP SEQUENCE " + T + "_seq",
                "COMMENT ON TABLE " + T + " IS 'audit trail (migration 3)'",
                "ALTER TABLE users ADD COLUMN jdbc_flag boolean",
                "ALTER TABLE users DROP COLUMN jdbc_flag",
            }) {
                exec(st, ddl);
            }

            // Cancel a statement running on one shard (s1) with
            // Statement.cancel from another thread.
            String marker = "cancel-me-jdbc-" + BASE;
            PreparedStatement sleep = c.prepareStatement("SELECT pg_sleep(60), '" + marker + "' FROM users WHERE id = ?");
            sleep.setLong(1, s1(0));
            AtomicReference<SQLException> err = new AtomicReference<>();
            Thread t = new Thread(() -> {
                try {
                    sleep.executeQuery();
                } catch (SQLException e) {
                    err.set(e);
                }
            });
            statements++;
            t.start();
            try (Connection w = connect("")) {
                PreparedStatement active = w.prepareStatement("/* pgshard: shard=s1 */ SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE ? AND pid <> pg_backend_pid()");
                active.setString(1, "%" + marker + "%");
                long deadline = System.nanoTime() + 20_000_000_000L;
                while (!query(active).equals(list("1"))) {
                    expect(System.nanoTime() < deadline, "the statement to cancel never showed on s1");
                    Thread.sleep(50);
                }
            }
            sleep.cancel();
            t.join(30_000);
            expect(!t.isAlive(), "cancelled statement still running after 30 s");
            expect(err.get() != null && "57014".equals(err.get().getSQLState()), "cancel: " + err.get());
            // setTransactionIsolation: SET SESSION CHARACTERISTICS, which
            // must follow the client too.
            c.setTransactionIsolation(Connection.TRANSACTION_REPEATABLE_READ);
            statements++;
            PreparedStatement set = c.prepareStatement("SELECT current_setting('statement_timeout') || ' ' || current_setting('transaction_isolation') FROM users WHERE id = ?");
            for (long k : new long[] {s0(3), s1(3)}) {
                set.setLong(1, k);
                List<String> got2 = query(set);
                expect(got2.equals(list("47s repeatable read")), "statement_timeout and isolation at the end on the shard of " + k + ": " + got2);
            }
        }

        idleGaps();
    }

    // idleGaps: connections with server-prepared statements
    // (prepareThreshold=1) and a session setting go idle until the proxy
    // has parked them, twice, and must then answer their prepared
    // statements on both shards and keep their setting; a connection
    // inside a transaction (never parked) reads its own update after the
    // gaps and commits it.
    static void idleGaps() throws Exception {
        final int n = 6;
        List<Connection> conns = new ArrayList<>();
        List<PreparedStatement> gets = new ArrayList<>();
        long txKey = s0(2300);
        try (Connection tx = connect("&prepareThreshold=1")) {
            PreparedStatement ins = tx.prepareStatement("INSERT INTO users (id, name) VALUES (?, ?)");
            ins.setLong(1, txKey);
            ins.setString(2, "before the gaps");
            expect(update(ins) == 1, "insert " + txKey);
            users++;
            for (int i = 0; i < n; i++) {
                Connection c = connect("&prepareThreshold=1");
                conns.add(c);
                exec(c.createStatement(), "SET application_name = 'idle-" + i + "'");
                PreparedStatement get = c.prepareStatement("SELECT id, name FROM users WHERE id = ?");
                gets.add(get);
                for (long k : new long[] {s0(10 + i), s1(10 + i)}) {
                    get.setLong(1, k);
                    List<String> got = query(get);
                    expect(got.equals(list(k + "|user " + k)), "before the gaps, connection " + i + ": " + k + ": " + got);
                }
            }
            tx.setAutoCommit(false);
            PreparedStatement upd = tx.prepareStatement("UPDATE users SET name = ? WHERE id = ?");
            upd.setString(1, "updated in tx");
            upd.setLong(2, txKey);
            expect(update(upd) == 1, "update in tx");
            PreparedStatement txGet = tx.prepareStatement("SELECT name FROM users WHERE id = ?");
            for (int round = 0; round < 2; round++) {
                awaitParked(n);
                for (int i = 0; i < n; i++) {
                    PreparedStatement get = gets.get(i);
                    for (long k : new long[] {s0(10 + i), s1(10 + i)}) {
                        get.setLong(1, k);
                        List<String> got = query(get);
                        expect(got.equals(list(k + "|user " + k)), "after idle gap " + (round + 1) + ", connection " + i + ": " + k + ": " + got);
                    }
                    List<String> app = query(conns.get(i).createStatement(), "SHOW application_name");
                    expect(app.equals(list("idle-" + i)), "after idle gap " + (round + 1) + ", connection " + i + ": application_name " + app);
                }
                txGet.setLong(1, txKey);
                List<String> own = query(txGet);
                expect(own.equals(list("updated in tx")), "after idle gap " + (round + 1) + ", the transaction reads " + own);
            }
            tx.commit();
            statements++;
            gets.get(0).setLong(1, txKey);
            List<String> after = query(gets.get(0));
            expect(after.equals(list(txKey + "|updated in tx")), "the committed update: " + after);
        } finally {
            for (Connection c : conns) c.close();
        }
    }
}
