package stream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/cache"
	"github.com/pgshard/pgshard/wire"
)

// Defaults of Config.
const (
	DefaultPublication    = "pgshard_cache"
	DefaultSlotPrefix     = "pgshard_cache"
	DefaultStatusInterval = 250 * time.Millisecond
	DefaultRetryInterval  = time.Second
	DefaultSilenceTimeout = 5 * time.Second
)

// Config configures one shard's Reader.
type Config struct {
	// ConnString reaches the shard primary's database as a role with the
	// REPLICATION attribute (and, to create the publication, ownership of
	// the tables). replication=database is added.
	ConnString string
	// Primary, when set, is called before each connection for the
	// connection string instead of ConnString, so that a reader follows
	// the shard map to a new primary after a failover (the old one's
	// stream fails, the next connection goes to the new one).
	Primary func() (string, error)
	// Tables maps each cacheable table ("public.users", schema-qualified,
	// lower-case) to its sharding key column.
	Tables map[string]string
	// Publication is the publication's name (DefaultPublication).
	Publication string
	// SlotPrefix starts the temporary slot's name; a random suffix makes
	// it unique (DefaultSlotPrefix).
	SlotPrefix string
	// StatusInterval is how often the reader confirms its position and
	// asks the server for a keepalive (DefaultStatusInterval). It must be
	// well under the cache's MaxStreamLag.
	StatusInterval time.Duration
	// RetryInterval is the pause before reconnecting (DefaultRetryInterval).
	RetryInterval time.Duration
	// SilenceTimeout ends a connection that sent nothing, not even the
	// keepalives asked for, for this long (DefaultSilenceTimeout).
	SilenceTimeout time.Duration
	// Logger (slog.Default() when nil).
	Logger *slog.Logger
}

// Reader streams one shard primary's changes into the cache.
type Reader struct {
	cfg Config
	out *cache.ShardStream
	log *slog.Logger

	mu   sync.Mutex
	slot string // the current slot, "" while disconnected
}

// New returns a Reader for cfg reporting to out. Run starts it.
func New(cfg Config, out *cache.ShardStream) (*Reader, error) {
	if cfg.ConnString == "" && cfg.Primary == nil {
		return nil, errors.New("stream: ConnString or Primary is required")
	}
	if len(cfg.Tables) == 0 {
		return nil, errors.New("stream: no cacheable tables")
	}
	for t, col := range cfg.Tables {
		if !strings.Contains(t, ".") || col == "" {
			return nil, fmt.Errorf("stream: table %q: want a schema-qualified name and a key column", t)
		}
	}
	if cfg.Publication == "" {
		cfg.Publication = DefaultPublication
	}
	if cfg.SlotPrefix == "" {
		cfg.SlotPrefix = DefaultSlotPrefix
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = DefaultStatusInterval
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = DefaultRetryInterval
	}
	if cfg.SilenceTimeout <= 0 {
		cfg.SilenceTimeout = DefaultSilenceTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Reader{cfg: cfg, out: out, log: log.With("shard", out.Shard())}, nil
}

// Slot returns the name of the temporary slot the reader streams from, or
// "" while it is not connected.
func (r *Reader) Slot() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.slot
}

func (r *Reader) setSlot(s string) {
	r.mu.Lock()
	r.slot = s
	r.mu.Unlock()
}

// Run streams until ctx ends, reconnecting after failures; the shard is
// bypassed (Down) from each failure until the next stream is up. It
// returns when ctx is done, with the shard reported Down.
func (r *Reader) Run(ctx context.Context) error {
	defer r.out.Down()
	for {
		err := r.runOnce(ctx)
		r.out.Down()
		r.setSlot("")
		if ctx.Err() != nil {
			return nil
		}
		r.log.Warn("cache invalidation stream failed; shard bypassed until it is back", "err", err)
		t := time.NewTimer(r.cfg.RetryInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// runOnce runs one connection: publication, temporary slot, stream.
func (r *Reader) runOnce(ctx context.Context) error {
	connString := r.cfg.ConnString
	if r.cfg.Primary != nil {
		var err error
		if connString, err = r.cfg.Primary(); err != nil {
			return fmt.Errorf("find the primary: %w", err)
		}
	}
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return fmt.Errorf("parse connection string: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = "pgshard cache stream"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	// Closing the connection ends the walsender, and the server drops the
	// temporary slot with it.
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	// Every call below takes ctx: pgconn interrupts a blocked read when
	// it ends.
	covered, err := r.ensurePublication(ctx, conn)
	if err != nil {
		return err
	}
	slot := r.cfg.SlotPrefix + "_" + randomSuffix()
	res, err := pglogrepl.CreateReplicationSlot(ctx, conn, slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Temporary: true, Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
	if err != nil {
		return fmt.Errorf("create temporary slot %s: %w", slot, err)
	}
	start, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return fmt.Errorf("slot %s: consistent point %q: %w", slot, res.ConsistentPoint, err)
	}
	err = pglogrepl.StartReplication(ctx, conn, slot, start, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + strings.ReplaceAll(r.cfg.Publication, "'", "''") + "'"},
	})
	if err != nil {
		return fmt.Errorf("start replication from slot %s: %w", slot, err)
	}
	r.setSlot(slot)
	r.out.Up(cache.LSN(start), covered)
	r.log.Info("cache invalidation stream up", "slot", slot, "start", start, "tables", covered)
	return r.stream(ctx, conn, start)
}

// stream applies the replication stream until it fails or ctx ends.
func (r *Reader) stream(ctx context.Context, conn *pgconn.PgConn, start pglogrepl.LSN) error {
	d := newDecoder(r.cfg.Tables, r.out, r.log)
	applied := start
	nextStatus := time.Now()
	lastHeard := time.Now()
	for {
		if now := time.Now(); !now.Before(nextStatus) {
			if now.Sub(lastHeard) > r.cfg.SilenceTimeout {
				return fmt.Errorf("server silent for %v", now.Sub(lastHeard).Round(time.Millisecond))
			}
			err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: applied, ReplyRequested: true})
			if err != nil {
				return fmt.Errorf("send status: %w", err)
			}
			nextStatus = now.Add(r.cfg.StatusInterval)
		}
		rctx, cancel := context.WithDeadline(ctx, nextStatus)
		msg, err := conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		lastHeard = time.Now()
		switch msg := msg.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("server: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				continue
			}
			switch msg.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("keepalive: %w", err)
				}
				// The server sent everything it decoded up to
				// ServerWALEnd before this keepalive, and it was applied.
				if ka.ServerWALEnd > applied {
					applied = ka.ServerWALEnd
				}
				r.out.Progress(cache.LSN(applied))
				if ka.ReplyRequested {
					nextStatus = time.Now()
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("xlogdata: %w", err)
				}
				end, err := d.apply(xld.WALData)
				if err != nil {
					return err
				}
				if end > applied {
					applied = end
				}
			}
		default:
			return fmt.Errorf("unexpected message %T", msg)
		}
	}
}

// ensurePublication creates the publication of the configured tables that
// exist on the shard, or adds those it lacks, and returns the configured
// tables it holds: the ones the stream covers. A configured table created
// on the shard later is covered from the next connection on.
func (r *Reader) ensurePublication(ctx context.Context, conn *pgconn.PgConn) ([]string, error) {
	pub := r.cfg.Publication
	var wanted []string
	for t := range r.cfg.Tables {
		wanted = append(wanted, t)
	}
	sort.Strings(wanted)
	var exist []string
	for _, t := range wanted {
		rows, err := query(ctx, conn, "SELECT to_regclass("+quoteLiteral(quoteQualified(t))+") IS NOT NULL")
		if err != nil {
			return nil, fmt.Errorf("look up table %s: %w", t, err)
		}
		if len(rows) == 1 && rows[0] == "t" {
			exist = append(exist, t)
		}
	}
	published := func() (map[string]bool, bool, error) {
		rows, err := query(ctx, conn, "SELECT count(*) FROM pg_publication WHERE pubname = "+quoteLiteral(pub))
		if err != nil {
			return nil, false, err
		}
		if rows[0] == "0" {
			return nil, false, nil
		}
		rows, err = query(ctx, conn, "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = "+quoteLiteral(pub))
		if err != nil {
			return nil, false, err
		}
		have := map[string]bool{}
		for _, t := range rows {
			have[t] = true
		}
		return have, true, nil
	}
	have, ok, err := published()
	if err != nil {
		return nil, fmt.Errorf("read publication %s: %w", pub, err)
	}
	if !ok {
		sql := "CREATE PUBLICATION " + quoteIdent(pub)
		if len(exist) > 0 {
			var names []string
			for _, t := range exist {
				names = append(names, quoteQualified(t))
			}
			sql += " FOR TABLE " + strings.Join(names, ", ")
		}
		if _, err := query(ctx, conn, sql); err != nil && !isCode(err, wire.SQLStateDuplicateObject) { // another proxy created it
			return nil, fmt.Errorf("create publication %s: %w", pub, err)
		}
		r.log.Info("created the cache publication", "publication", pub, "tables", exist)
		if have, _, err = published(); err != nil {
			return nil, fmt.Errorf("read publication %s: %w", pub, err)
		}
	}
	for _, t := range exist {
		if have[t] {
			continue
		}
		_, err := query(ctx, conn, "ALTER PUBLICATION "+quoteIdent(pub)+" ADD TABLE "+quoteQualified(t))
		if err != nil && !isCode(err, wire.SQLStateDuplicateObject) {
			// Changes of a table outside the publication would go unseen:
			// the stream does not come up.
			return nil, fmt.Errorf("add table %s to publication %s: %w", t, pub, err)
		}
	}
	if have, _, err = published(); err != nil {
		return nil, fmt.Errorf("read publication %s: %w", pub, err)
	}
	var covered []string
	for _, t := range wanted {
		if have[t] {
			covered = append(covered, t)
		}
	}
	return covered, nil
}

// query runs sql (simple protocol, as a replication connection requires)
// and returns the first column of every row of its last result.
func query(ctx context.Context, conn *pgconn.PgConn, sql string) ([]string, error) {
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, res := range results {
		if res.Err != nil {
			return nil, res.Err
		}
		out = out[:0]
		for _, row := range res.Rows {
			if len(row) > 0 {
				out = append(out, string(row[0]))
			}
		}
	}
	return out, nil
}

func isCode(err error, code string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// quoteQualified quotes "schema.table".
func quoteQualified(t string) string {
	schema, name, _ := strings.Cut(t, ".")
	return quoteIdent(schema) + "." + quoteIdent(name)
}

func randomSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
