'use strict'
// node-postgres through a sharded pgshard in transaction pooling.
//
// Run by integration/drivers (TestDrivers) with NODE_PATH pointing at the
// packages of package-lock.json (npm ci): connection settings come from
// the libpq environment (PGHOST, PGPORT, ...), DRV_BASE and DRV_SPLIT give
// this program's keys: base+i lives on shard s0, split+base+i on s1. Every
// answer is checked here; the first unexpected one exits non-zero. The
// last line is RESULT statements=N refusals=N rows=N users=N orders=N,
// which the test compares with what it finds on each shard's primary.

const pg = require('pg')
const copyStreams = require('pg-copy-streams')
const { pipeline } = require('stream/promises')
const { Readable, Writable } = require('stream')

const BASE = parseInt(process.env.DRV_BASE, 10)
const SPLIT = parseInt(process.env.DRV_SPLIT, 10)
const s0 = (i) => BASE + i
const s1 = (i) => SPLIT + BASE + i

let statements = 0
let refusals = 0
let rowsBack = 0
let users = 0
let orders = 0

function fail(msg) {
  console.log('FAIL: ' + msg + ` (statements so far ${statements}, refusals ${refusals})`)
  process.exit(1)
}

function expect(cond, msg) {
  if (!cond) fail(msg)
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b)
}

// q runs one statement (text or a query config, named or not), counts it
// and its rows; a 0A000 refusal is counted and rethrown.
async function q(client, text, values) {
  statements++
  try {
    const r = await client.query(text, values)
    rowsBack += r.rows ? r.rows.length : 0
    return r
  } catch (e) {
    if (e.code === '0A000') refusals++
    throw e
  }
}

async function expectError(client, text, values, code, what) {
  try {
    await q(client, text, values)
  } catch (e) {
    expect(e.code === code, `${what}: got ${e.code} ${e.message}, want ${code}`)
    return
  }
  fail(`${what}: no error, want ${code}`)
}

const insertUser = (k, name) => ({ name: 'insert-user', text: 'INSERT INTO users (id, name) VALUES ($1, $2)', values: [k, name] })
const getUser = (k) => ({ name: 'get-user', text: 'SELECT id::int8::text AS id, name FROM users WHERE id = $1', values: [k], rowMode: 'array' })
const getSettings = (k) => ({ name: 'get-settings', text: "SELECT current_setting('statement_timeout') AS st, current_setting('TimeZone') AS tz FROM users WHERE id = $1", values: [k] })

async function main() {
  const client = new pg.Client()
  await client.connect()

  // A SET that must follow the client to whichever server connection (and
  // shard) runs its next statements.
  await q(client, "SET statement_timeout = '47s'")
  await q(client, "SET TimeZone = 'Asia/Tokyo'")

  // Named (server-side prepared) statements, autocommit writes and reads
  // alternating between the shards.
  for (let i = 0; i < 250; i++) {
    for (const k of [s0(i), s1(i)]) {
      const r = await q(client, insertUser(k, `user ${k}`))
      expect(r.rowCount === 1, `insert ${k}: rowCount ${r.rowCount}`)
      users++
    }
    for (const k of [s0(i), s1(i)]) {
      const r = await q(client, getUser(k))
      expect(same(r.rows, [[String(k), `user ${k}`]]), `read back ${k}: ${JSON.stringify(r.rows)}`)
    }
    if (i % 25 === 0) {
      for (const k of [s0(i), s1(i)]) {
        const r = await q(client, getSettings(k))
        expect(same(r.rows, [{ st: '47s', tz: 'Asia/Tokyo' }]), `settings on the shard of ${k}: ${JSON.stringify(r.rows)}`)
      }
    }
  }

  // The same statement names on every connection of a pool, used at once.
  const pool = new pg.Pool({ max: 4 })
  const reads = []
  for (let i = 0; i < 100; i++) {
    const k = i % 2 ? s1(i) : s0(i)
    reads.push(q(pool, getUser(k)).then((r) => expect(same(r.rows, [[String(k), `user ${k}`]]), `pool read ${k}: ${JSON.stringify(r.rows)}`)))
  }
  await Promise.all(reads)
  await pool.end()

  // Pipeline mode: every query is sent without waiting for the previous
  // answer, each with its own Sync; writes and reads alternate between
  // the shards (a write on one shard followed by a read on the other).
  const pipe = new pg.Client({ pipeline: true })
  await pipe.connect()
  const inFlight = []
  for (let i = 300; i < 400; i++) {
    const [a, b] = i % 2 ? [s0(i), s1(i)] : [s1(i), s0(i)]
    inFlight.push(q(pipe, insertUser(a, `pipelined ${a}`)).then((r) => expect(r.rowCount === 1, `pipelined insert ${a}`)))
    inFlight.push(q(pipe, getUser(b - 300)).then((r) => expect(same(r.rows, [[String(b - 300), `user ${b - 300}`]]), `pipelined read ${b - 300}: ${JSON.stringify(r.rows)}`)))
    users++
  }
  await Promise.all(inFlight)
  // A transaction on one shard, then one on the other shard that fails,
  // each sent whole without waiting (the second BEGIN goes out while the
  // first transaction's COMMIT is still answered on s1).
  {
    const t = [
      q(pipe, 'BEGIN'),
      q(pipe, insertUser(s1(500), 'pipelined in a transaction')),
      q(pipe, getUser(s1(500))),
      q(pipe, 'COMMIT'),
      q(pipe, 'BEGIN'),
      q(pipe, insertUser(s0(501), 'rolled back in a pipeline')),
      q(pipe, 'SELECT 1/0 FROM users WHERE id = $1', [s0(0)]).then(() => fail('1/0 in a pipeline succeeded'), (e) => expect(e.code === '22012', `1/0 in a pipeline: ${e.code} ${e.message}`)),
      q(pipe, getUser(s0(0))).then(() => fail('a statement after an error in a pipelined transaction succeeded'), (e) => expect(e.code === '25P02', `after an error in a pipeline: ${e.code} ${e.message}`)),
      q(pipe, 'ROLLBACK'),
    ]
    const res = await Promise.all(t)
    expect(same(res[2].rows, [[String(s1(500)), 'pipelined in a transaction']]), `pipelined transaction read: ${JSON.stringify(res[2].rows)}`)
    users++
  }
  const pr = await q(pipe, 'SELECT count(*)::int AS n FROM users WHERE id BETWEEN $1 AND $2 AND name LIKE $3', [s1(300), s1(399), 'pipelined%'])
  expect(pr.rows[0].n === 50, `pipelined rows on s1: ${JSON.stringify(pr.rows)}`)
  await pipe.end()

  // Transactions: one rolled back, one with a savepoint rolled back, one
  // committed; on each shard.
  for (const side of [s0, s1]) {
    await q(client, 'BEGIN')
    await q(client, insertUser(side(1000), 'rolled back'))
    await q(client, 'ROLLBACK')
    await q(client, 'BEGIN')
    await q(client, insertUser(side(1001), 'committed'))
    await q(client, 'SAVEPOINT a')
    await q(client, insertUser(side(1002), 'rolled back to a savepoint'))
    await q(client, 'ROLLBACK TO SAVEPOINT a')
    const r = await q(client, 'SELECT count(*)::int AS n FROM users WHERE id = ANY($1::int8[])', [[side(1000), side(1001), side(1002)]])
    expect(r.rows[0].n === 1, `inside the transaction: ${JSON.stringify(r.rows)}`)
    await q(client, 'COMMIT')
    users++
  }

  // An error mid-transaction: aborted (25P02) until ROLLBACK, on this
  // shard and for a statement for the other, then the session works.
  for (const [side, other] of [[s0, s1], [s1, s0]]) {
    await q(client, 'BEGIN')
    await q(client, insertUser(side(1003), 'rolled back after an error'))
    await expectError(client, 'SELECT 1/0 FROM users WHERE id = $1', [side(0)], '22012', 'division by zero')
    await expectError(client, getUser(side(0)), undefined, '25P02', 'same shard after the error')
    await expectError(client, getUser(other(0)), undefined, '25P02', 'other shard after the error')
    await q(client, 'ROLLBACK')
    const r = await q(client, getUser(other(0)))
    expect(r.rows.length === 1, `after the rollback: ${JSON.stringify(r.rows)}`)
  }
  {
    const r = await q(client, 'SELECT count(*)::int AS n FROM users WHERE id = ANY($1::int8[])', [[s0(1003), s1(1003)]])
    expect(r.rows[0].n === 0, `rows of the failed transactions: ${JSON.stringify(r.rows)}`)
  }

  // A multi-row INSERT over both shards, with and without parameters.
  {
    const r = await q(client, 'INSERT INTO users (id, name) VALUES ($1, $2), ($3, $4), ($5, $6) RETURNING id::text',
      [s1(2000), 'multi', s0(2000), 'multi', s1(2001), 'multi'])
    expect(same(r.rows.map((x) => x.id), [String(s1(2000)), String(s0(2000)), String(s1(2001))]), `RETURNING over both shards: ${JSON.stringify(r.rows)}`)
    users += 3
    const r2 = await q(client, `INSERT INTO users (id, name) VALUES (${s0(2002)}, 'multi'), (${s1(2002)}, 'multi')`)
    expect(r2.rowCount === 2, `simple multi-row INSERT: ${r2.rowCount}`)
    users += 2
  }

  // COPY in (split by key over the shards) and out (pg-copy-streams).
  {
    let text = ''
    let copied = 0
    for (let i = 0; i < 100; i++) {
      for (const k of [s0(i), s1(i)]) {
        for (let j = 0; j < 3; j++) {
          text += `${k}\t${j}\t${j + 1}.${String(i % 100).padStart(2, '0')}\n`
          copied++
        }
      }
    }
    statements++
    const into = client.query(copyStreams.from('COPY orders (user_id, n, amount) FROM STDIN'))
    await pipeline(Readable.from([text]), into)
    expect(into.rowCount === copied, `COPY FROM: rowCount ${into.rowCount}, want ${copied}`)
    orders += copied
    let out = ''
    const sink = new Writable({ write(chunk, _enc, cb) { out += chunk.toString(); cb() } })
    statements++
    await pipeline(client.query(copyStreams.to('COPY orders TO STDOUT')), sink)
    const mine = out.split('\n').filter((l) => l !== '').filter((l) => {
      const k = parseInt(l.split('\t')[0], 10) % SPLIT
      return k >= BASE && k < BASE + 10000
    })
    rowsBack += mine.length
    expect(mine.length === copied, `COPY TO over both shards: ${mine.length} of my rows, want ${copied}`)
    out = ''
    const sink2 = new Writable({ write(chunk, _enc, cb) { out += chunk.toString(); cb() } })
    statements++
    await pipeline(client.query(copyStreams.to(`COPY (SELECT user_id, n, amount FROM orders WHERE user_id = ${s1(7)} ORDER BY n) TO STDOUT`)), sink2)
    expect(out === `${s1(7)}\t0\t1.07\n${s1(7)}\t1\t2.07\n${s1(7)}\t2\t3.07\n`, `COPY TO one shard: ${JSON.stringify(out)}`)
    rowsBack += 3
  }

  // Cancel a statement running on one shard (s1): the CancelRequest
  // reaches the server that runs it; the session goes on.
  {
    const marker = `cancel-me-nodepg-${BASE}`
    const sleeping = new pg.Query(`SELECT pg_sleep(60), '${marker}' FROM users WHERE id = $1`, [s1(0)])
    const done = new Promise((resolve) => {
      sleeping.on('error', (e) => resolve(e))
      sleeping.on('end', () => resolve(null))
    })
    statements++
    client.query(sleeping)
    const watcher = new pg.Client()
    await watcher.connect()
    const deadline = Date.now() + 20000
    for (;;) {
      const r = await q(watcher, "/* pgshard: shard=s1 */ SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()", [`%${marker}%`])
      if (r.rows[0].n === 1) break
      expect(Date.now() < deadline, 'the statement to cancel never showed on s1')
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    new pg.Client().cancel(client, sleeping)
    let timer
    const err = await Promise.race([done, new Promise((resolve) => { timer = setTimeout(() => resolve('timeout'), 30000) })])
    clearTimeout(timer)
    expect(err !== 'timeout', 'cancelled statement still running after 30 s')
    expect(err && err.code === '57014', `cancel: ${err && (err.code + ' ' + err.message)}`)
    const r = await q(client, getUser(s1(0)))
    expect(r.rows.length === 1, `after the cancel: ${JSON.stringify(r.rows)}`)
    await watcher.end()
  }

  for (const k of [s0(3), s1(3)]) {
    const r = await q(client, getSettings(k))
    expect(same(r.rows, [{ st: '47s', tz: 'Asia/Tokyo' }]), `settings at the end on the shard of ${k}: ${JSON.stringify(r.rows)}`)
  }
  await client.end()
  console.log(`RESULT statements=${statements} refusals=${refusals} rows=${rowsBack} users=${users} orders=${orders}`)
}

main().catch((e) => fail(`${e.code || ''} ${e.stack || e}`))
