package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pgshard/pgshard/replication/reshard"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/meta"
	"github.com/pgshard/pgshard/shardmap/metarpc"
)

// Resharding on a meta member: the leader-side controller of
// replication/reshard over the member's Raft node (workflow records, map,
// proxies' acknowledgements), its engines reaching the shards' primaries
// as the member's PostgreSQL role, and the API's resharding RPCs.

// ReshardConfig configures resharding on a meta member. Zero values take
// replication/reshard's defaults.
type ReshardConfig struct {
	// Database is the database that holds the distributions' tables on
	// every shard; "" means "postgres".
	Database string
	// CutoverTimeout bounds a cutover from its hold to its new epoch.
	CutoverTimeout time.Duration
	// MaxLagBytes is the lag above which a cutover does not start.
	MaxLagBytes int64
	// HoldVerifyRows is the interval size above which a cutover only
	// counts the rows inside its hold (reshard.ControllerConfig).
	HoldVerifyRows int64
	// Delete throttles cleanup's deletes.
	Delete reshard.DeleteOptions
}

// newResharding builds the member's resharding controller, which reaches
// the shards as login.
func newResharding(node *meta.Node, login PGLogin, o ReshardConfig, log *slog.Logger) (*reshard.Controller, error) {
	db := o.Database
	if db == "" {
		db = "postgres"
	}
	clog := log.With("component", "reshard")
	return reshard.NewController(reshard.ControllerConfig{
		Records: workflowRecords{node},
		Maps:    workflowMaps{node},
		Engines: func(mv reshard.Move, from, to shardmap.Shard) (reshard.Steps, error) {
			e, err := reshard.New(reshard.Config{
				Move:   mv,
				Source: reshard.ShardEndpoint(from, login.User, login.Password, db, login.SSLMode, login.SSLRootCert),
				Target: reshard.ShardEndpoint(to, login.User, login.Password, db, login.SSLMode, login.SSLRootCert),
				Logger: clog,
			})
			if err != nil {
				return nil, err
			}
			return reshard.EngineSteps(e), nil
		},
		Logger:         clog,
		CutoverTimeout: o.CutoverTimeout,
		MaxLagBytes:    o.MaxLagBytes,
		HoldVerifyRows: o.HoldVerifyRows,
		Delete:         o.Delete,
	})
}

// reshardController runs ctl as a leader-side controller.
func reshardController(ctl *reshard.Controller) Controller {
	return ControllerFunc(ctl.Run)
}

// workflowRecords is reshard.Records over a meta node.
type workflowRecords struct{ n *meta.Node }

func (w workflowRecords) Workflows(kind string) []reshard.Record {
	var out []reshard.Record
	for _, r := range w.n.Workflows(kind) {
		out = append(out, reshard.Record{ID: r.ID, Version: r.Version, State: r.State, UpdatedAt: r.UpdatedAt})
	}
	return out
}

func (w workflowRecords) Workflow(id string) (reshard.Record, bool) {
	r, ok := w.n.Workflow(id)
	if !ok || r.Kind != reshard.WorkflowKind {
		return reshard.Record{}, false
	}
	return reshard.Record{ID: r.ID, Version: r.Version, State: r.State, UpdatedAt: r.UpdatedAt}, true
}

func (w workflowRecords) PutWorkflow(ctx context.Context, id, kind string, expect uint64, state []byte) (uint64, error) {
	v, err := w.n.PutWorkflow(ctx, id, kind, expect, state)
	if errors.Is(err, meta.ErrStaleWorkflow) {
		return 0, fmt.Errorf("%w: %w", reshard.ErrStale, err)
	}
	return v, err
}

// workflowMaps is reshard.Maps over a meta node.
type workflowMaps struct{ n *meta.Node }

func (w workflowMaps) Map() *shardmap.Map { return w.n.Map().Map }

func (w workflowMaps) ApplyMap(ctx context.Context, m *shardmap.Map, expect uint64, comment string) (uint64, error) {
	e, err := w.n.ApplyMap(ctx, m, expect, comment)
	if errors.Is(err, meta.ErrStaleEpoch) {
		return 0, fmt.Errorf("%w: %w", reshard.ErrStaleMap, err)
	}
	return e, err
}

func (w workflowMaps) WaitApplied(ctx context.Context, epoch uint64) error {
	return w.n.WaitApplied(ctx, epoch)
}

// resharder is the API's metarpc.Resharder over the controller, its
// errors mapped to the API's.
type resharder struct{ c *reshard.Controller }

func apiError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, reshard.ErrNotFound):
		return &kindError{metarpc.ErrNotFound, err}
	case errors.Is(err, reshard.ErrConflict):
		return &kindError{metarpc.ErrFailedPrecondition, err}
	case errors.Is(err, reshard.ErrInvalid):
		return &kindError{metarpc.ErrInvalidArgument, err}
	}
	return err
}

// kindError is err, matching an API sentinel without saying it (the
// client gets err's text).
type kindError struct{ kind, err error }

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.err, e.kind} }

func apiMove(s reshard.Status) (metarpc.ReshardMove, error) {
	b, err := jsonState(s.State)
	return metarpc.ReshardMove{ID: s.ID, Version: s.Version, UpdatedAt: s.UpdatedAt, State: b}, err
}

func (r resharder) AddShard(ctx context.Context, s shardmap.Shard) (uint64, error) {
	e, err := r.c.AddShard(ctx, s)
	return e, apiError(err)
}

func (r resharder) Split(ctx context.Context, dist, at string) (uint64, error) {
	e, err := r.c.Split(ctx, dist, at)
	return e, apiError(err)
}

func (r resharder) StartMove(ctx context.Context, req metarpc.MoveRequest) (metarpc.ReshardMove, error) {
	st, err := r.c.Start(ctx, reshard.MoveRequest{ID: req.ID, Distribution: req.Distribution, Interval: req.Interval, To: req.To,
		Cutover: reshard.CutoverMode(req.Cutover)})
	if err != nil {
		return metarpc.ReshardMove{}, apiError(err)
	}
	return apiMove(st)
}

// id resolves a reference to a move id.
func (r resharder) id(ref metarpc.MoveRef) (string, error) {
	if ref.ID != "" {
		return ref.ID, nil
	}
	st, err := r.c.Find(ref.Distribution, ref.Interval)
	if err != nil {
		return "", apiError(err)
	}
	return st.ID, nil
}

func (r resharder) Act(ctx context.Context, ref metarpc.MoveRef, action string, force bool) (metarpc.ReshardMove, error) {
	id, err := r.id(ref)
	if err != nil {
		return metarpc.ReshardMove{}, err
	}
	st, err := r.c.Act(ctx, id, action, force)
	if err != nil {
		return metarpc.ReshardMove{}, apiError(err)
	}
	return apiMove(st)
}

func (r resharder) List(ref metarpc.MoveRef) ([]metarpc.ReshardMove, error) {
	id := ""
	if ref != (metarpc.MoveRef{}) {
		var err error
		if id, err = r.id(ref); err != nil {
			return nil, err
		}
	}
	sts, err := r.c.List(id)
	if err != nil {
		return nil, apiError(err)
	}
	out := make([]metarpc.ReshardMove, 0, len(sts))
	for _, s := range sts {
		m, err := apiMove(s)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// jsonState is a move's state as the API carries it.
func jsonState(st reshard.State) ([]byte, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("reshard: encode state: %w", err)
	}
	return b, nil
}
