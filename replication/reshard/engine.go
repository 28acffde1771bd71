package reshard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/shardmap"
)

// Endpoint is how the engine reaches one side of a move.
type Endpoint struct {
	// Shard names the shard, for messages.
	Shard string
	// DSN is the pgx connection string (URL or keyword=value) of the
	// shard's primary for the engine's own sessions, as a superuser.
	DSN string
	// Conninfo is the libpq connection string the other server uses to
	// reach this one (CREATE SUBSCRIPTION ... CONNECTION) when this side
	// publishes. Empty means one derived from DSN (host, port, user,
	// password, dbname, sslmode), right when both servers see the same
	// network as the engine.
	Conninfo string
}

// Config configures an [Engine].
type Config struct {
	Move   Move
	Source Endpoint
	Target Endpoint
	// PgDump is the pg_dump binary PrepareTarget runs; empty means
	// /usr/lib/postgresql/15/bin/pg_dump if present, else pg_dump on PATH.
	PgDump string
	// Logger receives the engine's logs; nil means slog.Default().
	Logger *slog.Logger
	// PollInterval is how often waits poll the servers; 0 means 100 ms.
	PollInterval time.Duration
	// FenceLockTimeout bounds how long Fence and Unfence wait for the
	// tables' lock (CREATE/DROP TRIGGER takes SHARE ROW EXCLUSIVE, which
	// waits for the write transactions in flight and holds back new
	// writes to the whole table meanwhile); 0 means 1 s. On timeout the
	// step fails with SQLSTATE 55P03 and can be repeated.
	FenceLockTimeout time.Duration
}

// Engine runs the steps of one move between two servers. Its methods are
// safe for concurrent use; each opens its own sessions and closes them
// before it returns.
type Engine struct {
	cfg     Config
	names   Names
	reverse bool
	log     *slog.Logger

	mu     sync.Mutex
	copied map[string][2]int64 // table -> highest rows, bytes copied seen
}

// New validates cfg and returns the engine of its move.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Move.Validate(); err != nil {
		return nil, err
	}
	if cfg.Source.DSN == "" || cfg.Target.DSN == "" {
		return nil, errors.New("reshard: source and target need a DSN")
	}
	for _, ep := range []*Endpoint{&cfg.Source, &cfg.Target} {
		if _, err := pgconn.ParseConfig(ep.DSN); err != nil {
			return nil, fmt.Errorf("reshard: DSN of shard %s: %w", ep.Shard, err)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 100 * time.Millisecond
	}
	if cfg.FenceLockTimeout <= 0 {
		cfg.FenceLockTimeout = time.Second
	}
	e := &Engine{cfg: cfg, names: NamesFor(cfg.Move.ID, false)}
	e.log = cfg.Logger.With("move", cfg.Move.ID, "source", cfg.Source.Shard, "target", cfg.Target.Shard)
	return e, nil
}

// Reverse returns the engine of the opposite direction (target to source)
// of the same move, whose objects are named with the pgshard_rv_ prefix:
// its StartCopy is what [Engine.StartReverse] runs (without a copy), its
// Fence fences the target, its WaitCaughtUp waits for the source to apply
// the target's writes, and its DeleteMoved deletes the interval from the
// target (after a rollback).
func (e *Engine) Reverse() *Engine {
	r := &Engine{cfg: e.cfg, reverse: !e.reverse}
	r.cfg.Source, r.cfg.Target = e.cfg.Target, e.cfg.Source
	r.names = NamesFor(e.cfg.Move.ID, r.reverse)
	r.log = e.cfg.Logger.With("move", e.cfg.Move.ID, "source", r.cfg.Source.Shard, "target", r.cfg.Target.Shard)
	return r
}

// Names returns the names of this direction's objects.
func (e *Engine) Names() Names { return e.names }

// Move returns the engine's move.
func (e *Engine) Move() Move { return e.cfg.Move }

// side is one server of the move in a step.
type side struct {
	ep   Endpoint
	role string // "source" or "target", for messages
}

func (e *Engine) source() side { return side{e.cfg.Source, "source"} }
func (e *Engine) target() side { return side{e.cfg.Target, "target"} }

func (s side) String() string { return s.role + " shard " + s.ep.Shard }

// sessionSettings make text output (checksums of row text) and
// timestamps identical on both servers whatever their defaults.
const sessionSettings = `SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres';
SET extra_float_digits = 1; SET bytea_output = 'hex'; SET lock_timeout = '10s'`

// connect opens a session on s with the common settings.
func (e *Engine) connect(ctx context.Context, s side) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(s.ep.DSN)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s, err)
	}
	cfg.RuntimeParams["application_name"] = "pgshard-reshard"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", s, err)
	}
	if _, err := conn.Exec(ctx, sessionSettings); err != nil {
		_ = conn.Close(context.Background())
		return nil, fmt.Errorf("%s: session settings: %w", s, err)
	}
	return conn, nil
}

// withConn runs f on a new session on s.
func (e *Engine) withConn(ctx context.Context, s side, f func(*pgx.Conn) error) error {
	conn, err := e.connect(ctx, s)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	return f(conn)
}

// exists runs a query returning one boolean.
func exists(ctx context.Context, conn *pgx.Conn, sql string, args ...any) (bool, error) {
	var ok bool
	err := conn.QueryRow(ctx, sql, args...).Scan(&ok)
	return ok, err
}

// poll calls f every interval until it reports done, fails or ctx ends.
func (e *Engine) poll(ctx context.Context, f func() (bool, error)) error {
	t := time.NewTicker(e.cfg.PollInterval)
	defer t.Stop()
	for {
		done, err := f()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// publisherConninfo is the libpq conninfo the subscriber uses to reach s.
func publisherConninfo(ep Endpoint) (string, error) {
	if ep.Conninfo != "" {
		return ep.Conninfo, nil
	}
	cfg, err := pgconn.ParseConfig(ep.DSN)
	if err != nil {
		return "", err
	}
	kv := []string{
		"host=" + conninfoValue(cfg.Host),
		"port=" + strconv.Itoa(int(cfg.Port)),
		"user=" + conninfoValue(cfg.User),
		"dbname=" + conninfoValue(cfg.Database),
	}
	if cfg.Password != "" {
		kv = append(kv, "password="+conninfoValue(cfg.Password))
	}
	if cfg.TLSConfig == nil {
		kv = append(kv, "sslmode=disable")
	} else {
		kv = append(kv, "sslmode=require")
	}
	return strings.Join(kv, " "), nil
}

// conninfoValue quotes a conninfo value.
func conninfoValue(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(s) + "'"
}

// sqlState returns the SQLSTATE of a server error, "" otherwise.
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// ShardEndpoint returns the Endpoint of shard s's primary for a role,
// password and database, with a keyword/value DSN; sslmode "" leaves
// libpq's and pgx's default (prefer); sslrootcert, when set, is the CA
// file that verify-ca and verify-full check the server against. The
// subscription's conninfo is derived from it (see Endpoint.Conninfo;
// without the CA file, which is a path on this host, not on the server).
func ShardEndpoint(s shardmap.Shard, user, password, database, sslmode, sslrootcert string) Endpoint {
	kv := []string{
		"host=" + conninfoValue(s.Primary.Host),
		"port=" + strconv.Itoa(s.Primary.Port),
		"user=" + conninfoValue(user),
		"dbname=" + conninfoValue(database),
	}
	if password != "" {
		kv = append(kv, "password="+conninfoValue(password))
	}
	if sslmode != "" {
		kv = append(kv, "sslmode="+conninfoValue(sslmode))
	}
	if sslrootcert != "" {
		kv = append(kv, "sslrootcert="+conninfoValue(sslrootcert))
	}
	return Endpoint{Shard: s.Name, DSN: strings.Join(kv, " ")}
}
