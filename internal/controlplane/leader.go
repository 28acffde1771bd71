package controlplane

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Controller is a leader-side controller: a loop that drives the cluster
// (its state in the replicated map) and must run on the meta leader only.
// The member starts Run when it becomes the leader and cancels its
// context when it stops leading or closes, and waits for Run to return:
// Run must stop every goroutine it started before it returns. Its state
// lives in the replicated map (or FSM), so that the next leader's Run
// resumes where this one stopped.
type Controller interface {
	Run(ctx context.Context)
}

// ControllerFunc adapts a function to [Controller].
type ControllerFunc func(ctx context.Context)

// Run calls f(ctx).
func (f ControllerFunc) Run(ctx context.Context) { f(ctx) }

// DefaultLeaderPoll is how often a member checks whether it leads, to
// start or stop its leader-side controllers (Config.LeaderPoll).
const DefaultLeaderPoll = 100 * time.Millisecond

// namedController is a registered controller and the name it is logged
// with.
type namedController struct {
	name string
	c    Controller
}

// leaderSide runs the registered controllers while isLeader() holds.
// Register them all before run.
type leaderSide struct {
	isLeader func() bool
	poll     time.Duration
	log      *slog.Logger
	ctls     []namedController
}

// register adds c, started with the others when this member leads.
func (l *leaderSide) register(name string, c Controller) {
	l.ctls = append(l.ctls, namedController{name, c})
}

// names lists the registered controllers.
func (l *leaderSide) names() []string {
	out := make([]string, 0, len(l.ctls))
	for _, c := range l.ctls {
		out = append(out, c.name)
	}
	return out
}

// run follows leadership until ctx ends: it starts every controller when
// this member becomes the leader and stops them (cancels and waits) when
// it no longer is, and when ctx ends.
func (l *leaderSide) run(ctx context.Context) {
	if len(l.ctls) == 0 {
		return
	}
	var stop func() // non-nil while the controllers run
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	t := time.NewTicker(l.poll)
	defer t.Stop()
	for {
		switch leading := l.isLeader(); {
		case leading && stop == nil:
			l.log.Info("meta leader: starting the leader-side controllers", "controllers", l.names())
			stop = l.start(ctx)
		case !leading && stop != nil:
			l.log.Info("no longer the meta leader: stopping the leader-side controllers; the next leader resumes their work", "controllers", l.names())
			stop()
			stop = nil
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// start runs every controller in a goroutine of its own, and returns the
// function that cancels them and waits for them to return.
func (l *leaderSide) start(parent context.Context) func() {
	ctx, cancel := context.WithCancel(parent)
	var wg sync.WaitGroup
	for _, nc := range l.ctls {
		wg.Go(func() { nc.c.Run(ctx) })
	}
	return func() {
		cancel()
		wg.Wait()
	}
}
