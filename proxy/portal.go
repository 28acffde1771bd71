package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	pg "github.com/pganalyze/pg_query_go/v6"

	"github.com/pgshard/pgshard/proxy/scatter"
	"github.com/pgshard/pgshard/router"
	"github.com/pgshard/pgshard/router/merge"
	rplan "github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/router/sqllex"
	"github.com/pgshard/pgshard/wire"
)

// Statements over several shards through the extended protocol. A Bind
// whose statement and parameters need several shards creates a portal no
// server holds: the proxy answers BindComplete, remembers whether the
// client describes the portal, and runs the statement on every shard
// (Parse, Bind with the client's parameters, Describe, Execute, Sync)
// when the client executes it. Portals end at Sync, as they do outside a
// transaction block, the only place such statements run.

// scatterPortal is a portal over several shards.
type scatterPortal struct {
	name      string
	plan      rplan.Plan
	sql       string // the statement the shards get (unless per shard)
	ext       scatterExt
	byteOrder bool // the database sorts text bytewise (collation.go)
	described bool // the client sent Describe for it
	done      bool // it has been executed
	// txSQL is set for transaction control the proxy answers itself (see
	// session.localTx) instead of running it on shards.
	txSQL  string
	txInfo router.Info
	// txMulti marks a COMMIT (txCommit) or ROLLBACK of a transaction
	// over several shards (multitx.go); inTx a statement over several
	// shards that runs in the session's transaction.
	txMulti, txCommit, inTx bool
	// cached is the encoded result of a portal the cache answers
	// (cache_session.go), and cacheOff how much of it was sent.
	cached    []byte
	cacheOff  int
	suspended bool
}

// scatterExt is how a statement runs on a shard through the extended
// protocol.
type scatterExt struct {
	paramOIDs []uint32  // parameter types of the client's Parse
	bind      wire.Bind // the client's Bind (a copy): its parameter format codes and values are sent on
	formats   []int16   // result format codes for the shards' columns
}

// AppendFrames appends Parse, Bind, Describe (portal), Execute and Sync
// of sql with the client's parameters (scatter.Request.Ext).
func (x *scatterExt) AppendFrames(b []byte, sql string) []byte {
	oids := x.paramOIDs
	if n := x.bind.NumParams(); n > 0 && sql != "" {
		// A statement that does not use every parameter (the rows of a
		// split INSERT that one shard gets) cannot leave the unused
		// ones' types to the server: give them a type that accepts any
		// value in their format.
		used := referencedParams(sql, n)
		var fixed []uint32
		for i := range n {
			var oid uint32
			if i < len(oids) {
				oid = oids[i]
			}
			if oid == 0 && !used[i] {
				if fixed == nil {
					fixed = make([]uint32, n)
					copy(fixed, oids)
				}
				oid = oidText
				if x.bind.ParamFormat(i) == 1 {
					oid = oidBytea
				}
				fixed[i] = oid
			}
		}
		if fixed != nil {
			oids = fixed
		}
	}
	// Parse (unnamed statement).
	start := len(b)
	b = append(b, 'P', 0, 0, 0, 0, 0)
	b = append(b, sql...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(oids)))
	for _, oid := range oids {
		b = binary.BigEndian.AppendUint32(b, oid)
	}
	binary.BigEndian.PutUint32(b[start+1:], uint32(len(b)-start-1))
	// Bind (unnamed portal, unnamed statement).
	start = len(b)
	b = append(b, 'B', 0, 0, 0, 0, 0, 0)
	b = append(b, x.bind.ParamSection()...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(x.formats)))
	for _, f := range x.formats {
		b = binary.BigEndian.AppendUint16(b, uint16(f))
	}
	binary.BigEndian.PutUint32(b[start+1:], uint32(len(b)-start-1))
	b = append(b, 'D', 0, 0, 0, 6, 'P', 0) // Describe portal ""
	b = append(b, 'E', 0, 0, 0, 9, 0, 0, 0, 0, 0)
	return append(b, 'S', 0, 0, 0, 4)
}

const (
	oidBytea = 17
	oidText  = 25
)

// referencedParams reports which of the parameters $1..$n sql uses,
// skipping string literals, quoted identifiers, dollar quotes and
// comments.
func referencedParams(sql string, n int) []bool {
	used := make([]bool, n)
	for i := 0; i < len(sql); i++ {
		if j := sqllex.Skip(sql, i); j > i {
			i = j - 1
			continue
		}
		if sql[i] != '$' || (i > 0 && sqllex.IsIdentByte(sql[i-1])) {
			continue
		}
		j := i + 1
		for j < len(sql) && sqllex.IsDigit(sql[j]) {
			j++
		}
		if j > i+1 {
			if k, err := strconv.Atoi(sql[i+1 : j]); err == nil && k >= 1 && k <= n {
				used[k-1] = true
			}
			i = j - 1
		}
	}
	return used
}

// shardResultFormats maps the client's result format codes (one per
// column of its result, or one or none for all) to format codes for the
// shards' columns, which differ when the planner rewrote the statement
// for merging (avg as sum and count, hidden sort columns). Columns only
// the merge reads are text.
func shardResultFormats(spec *merge.Spec, client []int16) ([]int16, error) {
	if len(client) <= 1 || spec == nil {
		return client, nil
	}
	if spec.Final == nil {
		if spec.HiddenTail > 0 {
			// SELECT * with hidden sort columns after the star's: text.
			return append(slices.Clip(client), make([]int16, spec.HiddenTail)...), nil
		}
		return client, nil
	}
	n := len(spec.Combine)
	visible := 0
	for _, f := range spec.Final {
		n = max(n, f.Source+1)
		if f.Kind == merge.FinalAvg {
			n = max(n, f.CountSource+1)
		}
		if !f.Hidden {
			visible++
		}
	}
	if len(client) != visible {
		return nil, &wire.Error{Code: wire.SQLStateProtocolViolation,
			Message: fmt.Sprintf("bind message has %d result formats but query has %d columns", len(client), visible)}
	}
	out := make([]int16, n)
	set := make([]bool, n)
	v := 0
	for _, f := range spec.Final {
		if f.Hidden {
			continue
		}
		if set[f.Source] && out[f.Source] != client[v] {
			return nil, &wire.Error{Code: wire.SQLStateFeatureNotSupported,
				Message: "cross-shard query: one shard column feeds two result columns with different formats",
				Hint:    "Request the same format for both columns."}
		}
		out[f.Source], set[f.Source] = client[v], true
		v++
	}
	return out, nil
}

// bindScatter creates the portal for a Bind whose statement runs on
// several shards, and answers BindComplete.
func (s *session) bindScatter(ctx context.Context, portal, name string, plan rplan.Plan, bind *wire.Bind) error {
	if plan.Kind == rplan.Utility {
		// DDL over several shards: run at Execute, all or none.
		if n := bind.NumParams(); n > 0 {
			return &wire.Error{Code: wire.SQLStateProtocolViolation,
				Message: fmt.Sprintf("bind message supplies %d parameters, but a utility statement takes none", n)}
		}
		s.portal = &scatterPortal{name: portal, plan: plan, sql: strings.Clone(s.stmtSQL(name))}
		s.out = append(s.out, '2', 0, 0, 0, 4)
		return nil
	}
	shardFormats, err := shardResultFormats(plan.Merge, bind.AppendResultFormats(make([]int16, 0, bind.NumResultFormats())))
	if err != nil {
		return err
	}
	if err := s.checkAggregates(ctx, plan.Shards[0], plan.Calls); err != nil {
		return err
	}
	byteOrder, err := s.sortsBytewise(ctx, plan)
	if err != nil {
		return err
	}
	sql := plan.ShardSQL
	if sql == "" {
		sql = s.stmtSQL(name)
	}
	s.portal = &scatterPortal{
		name:      portal,
		plan:      plan,
		byteOrder: byteOrder,
		sql:       strings.Clone(sql),
		ext: scatterExt{
			paramOIDs: router.ParamOIDs(s.stmtParse(name)),
			bind:      bind.Clone(),
			formats:   shardFormats,
		},
	}
	s.mu.Lock()
	s.portal.inTx = s.st.inTxOverShards()
	s.mu.Unlock()
	s.out = append(s.out, '2', 0, 0, 0, 4)
	return nil
}

// scatterPortalFor returns the portal over several shards the client
// calls name, if it is one and no backend is attached.
func (s *session) scatterPortalFor(name string) *scatterPortal {
	if s.portal == nil || s.portal.name != name || s.attached() != nil && !s.portal.txMulti && !s.portal.inTx {
		return nil
	}
	return s.portal
}

// handleExecute runs a portal over several shards, or forwards Execute.
func (s *session) handleExecute(ctx context.Context, frame []byte) error {
	ex, err := wire.DecodeExecute(frame[wire.HeaderLen:])
	if err != nil {
		return malformed("Execute")
	}
	name := string(ex.Portal)
	p := s.scatterPortalFor(name)
	if p == nil {
		if name == "" && s.stmts.bound != nil {
			if s.stmts.ran != nil {
				// Two parameter changes before one Sync: keep the
				// backend rather than track both.
				s.pin("two session parameter changes in one extended-protocol pipeline")
			}
			s.stmts.ran, s.stmts.bound = s.stmts.bound, nil
		}
		return s.forwardAny(ctx, frame)
	}
	if p.cached != nil {
		s.cachedExecute(p, int(ex.MaxRows))
		return nil
	}
	if p.txSQL != "" {
		if !p.done && p.txMulti {
			p.done = true
			tag, err := s.endMultiTx(ctx, p.txCommit)
			if err != nil {
				return err
			}
			s.out = wire.AppendString(s.out, 'C', tag)
		} else if !p.done {
			p.done = true
			tag, werr := s.applyDeferredTx(ctx, p.txInfo, p.txSQL)
			if werr != nil {
				return werr
			}
			s.out = wire.AppendString(s.out, 'C', tag)
		} else {
			s.out = append(s.out, 'I', 0, 0, 0, 4) // EmptyQueryResponse
		}
		return nil
	}
	if p.plan.Kind == rplan.Utility {
		if p.done {
			s.out = append(s.out, 'I', 0, 0, 0, 4) // EmptyQueryResponse
			return nil
		}
		p.done = true
		tag, err := s.utilityOnShards(ctx, p.plan, p.sql)
		if err != nil {
			return err
		}
		s.out = wire.AppendString(s.out, 'C', tag)
		return nil
	}
	if p.done {
		s.out = merge.AppendCommandComplete(s.out, 0)
		return nil
	}
	if maxRows := ex.MaxRows; maxRows > 0 {
		// A row limit only matters for a result with that many rows
		// (pgjdbc sets 1 for updates). A write that returns no rows runs
		// whole, as on PostgreSQL; a read runs (it has no effect) and is
		// answered whole when it has fewer rows than the limit; anything
		// else would need the result in parts.
		switch {
		case p.plan.ReadOnly:
			return s.runPortalLimited(ctx, p, int(maxRows))
		case !returnsRows(p.sql):
		default:
			return errRowLimit
		}
	}
	p.done = true
	out, err := s.runPortal(ctx, p, !p.described, true)
	s.out = out
	return err
}

// errRowLimit refuses an Execute with a row limit over several shards
// whose result would have to come in parts.
var errRowLimit = &wire.Error{Code: wire.SQLStateFeatureNotSupported,
	Message: "cross-shard query: fetching the result in parts (Execute with a row limit) is not supported",
	Hint:    "Fetch all rows at once, or add a condition on the sharding key."}

// runPortalLimited runs a read over several shards for an Execute with a
// row limit: the result is kept until it is complete and answered only
// when it has fewer rows than the limit (then, as on PostgreSQL, the
// portal runs to completion); else the read is refused.
func (s *session) runPortalLimited(ctx context.Context, p *scatterPortal, maxRows int) error {
	p.done = true
	out, err := s.runPortal(ctx, p, !p.described, false)
	if err != nil {
		s.out = out
		return err
	}
	rows := 0
	for b := out; len(b) >= wire.HeaderLen; {
		if b[0] == 'D' {
			rows++
		}
		n := int(binary.BigEndian.Uint32(b[1:])) + 1
		if n < wire.HeaderLen || n > len(b) {
			break
		}
		b = b[n:]
	}
	if rows >= maxRows {
		s.out = out[:0]
		return errRowLimit
	}
	s.out = out
	return nil
}

// returnsRows reports whether statement sql may return rows: false only
// for an INSERT, UPDATE or DELETE without RETURNING (a single statement
// that parses).
func returnsRows(sql string) bool {
	tree, err := pg.Parse(sql)
	if err != nil || len(tree.Stmts) != 1 {
		return true
	}
	n := tree.Stmts[0].Stmt
	switch {
	case n.GetInsertStmt() != nil:
		return len(n.GetInsertStmt().ReturningList) > 0
	case n.GetUpdateStmt() != nil:
		return len(n.GetUpdateStmt().ReturningList) > 0
	case n.GetDeleteStmt() != nil:
		return len(n.GetDeleteStmt().ReturningList) > 0
	}
	return true
}

// runPortal runs p on its shards and returns the output appended to
// s.out (after flushing what s.out held).
func (s *session) runPortal(ctx context.Context, p *scatterPortal, noDesc, stream bool) ([]byte, error) {
	if err := s.flushClient(); err != nil {
		return s.out, err
	}
	start := time.Now()
	req := scatter.Request{
		Shards:        p.plan.Shards,
		Replicas:      s.scatterReplicas(p.plan),
		SQL:           p.sql,
		PerShardSQL:   p.plan.PerShardSQL,
		Ext:           &p.ext,
		NoDescription: noDesc,
		Atomic:        p.plan.Atomic,
		RowOrder:      p.plan.PerShardRows,
		Spec:          p.plan.Merge,
		TextByteOrder: p.byteOrder,
		Prepare:       s.prepareBackend,
		Canceler:      &s.scatterCancel,
		Dst:           s.out[:0],
	}
	if stream {
		req.Flush = func(b []byte) error { _, err := s.conn.Write(b); return err }
	}
	if err := s.splitWrite(p.plan, &req); err != nil {
		return s.out, err
	}
	out, err := s.scatter(ctx, !p.plan.ReadOnly, req)
	if err != nil {
		var we *wire.Error
		if !errors.As(err, &we) {
			return out, err
		}
		return out, we
	}
	s.srv.metrics.query(time.Since(start))
	return out, nil
}

// endPortal ends the portal over several shards at Sync (or when the
// client binds another portal under its name). A portal the client
// described but never executed still owes its RowDescription: the
// statement runs (it only reads) for it.
func (s *session) endPortal(ctx context.Context) error {
	p := s.portal
	s.portal = nil
	if p == nil || !p.described || p.done || p.txSQL != "" || p.cached != nil {
		return nil
	}
	if !p.plan.ReadOnly {
		return &wire.Error{Code: wire.SQLStateFeatureNotSupported,
			Message: "cross-shard statement: describing a write over several shards without executing it is not supported"}
	}
	out, err := s.runPortal(ctx, p, false, false)
	if err != nil {
		s.out = out
		return err
	}
	// Keep only the RowDescription (or NoData).
	if len(out) >= wire.HeaderLen && out[0] == 'T' {
		out = out[:int(binary.BigEndian.Uint32(out[1:]))+1]
	} else {
		out = append(out[:0], 'n', 0, 0, 0, 4)
	}
	s.out = out
	return nil
}
