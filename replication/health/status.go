package health

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// Status is what the monitor knows about one target; see the package
// documentation for how the lag is defined.
type Status struct {
	Target // Shard, Addr and the Role the shard map gives it

	// Up reports whether the latest probe succeeded; false before the
	// first probe.
	Up bool
	// LastError is the latest probe's error; nil when it succeeded or
	// none has finished.
	LastError error
	// ConsecutiveFailures counts the failed probes since the latest
	// successful one (or since the start).
	ConsecutiveFailures int
	// ProbeFailures counts every failed probe of the target.
	ProbeFailures uint64
	// LastProbe is when the latest probe finished; zero before the first.
	LastProbe time.Time

	// The fields below come from the latest successful probe and are kept
	// while the target is down; Observed is false when no probe has ever
	// succeeded, and they are then zero.
	Observed bool
	// InRecovery is pg_is_in_recovery(): true on a streaming replica.
	InRecovery bool
	// LSN is pg_current_wal_lsn() on a server not in recovery,
	// pg_last_wal_replay_lsn() on one in recovery.
	LSN LSN

	// LagKnown reports whether LagBytes and LagSeconds are set: the
	// target is an observed replica (in recovery) and its shard's primary
	// has been observed out of recovery.
	LagKnown bool
	// LagBytes is how many bytes of WAL the replica has yet to replay.
	LagBytes uint64
	// LagSeconds is 0 when LagBytes is 0, else the seconds since the last
	// transaction the replica replayed committed (+Inf when it has
	// replayed none since it started).
	LagSeconds float64
}

// Healthy reports whether s is a replica that can serve reads within the
// given lag bounds: up, in recovery, with a known lag of at most
// maxLagBytes bytes and maxLagSeconds seconds.
func (s Status) Healthy(maxLagBytes uint64, maxLagSeconds float64) bool {
	return s.Role == RoleReplica && s.Up && s.InRecovery && s.LagKnown &&
		s.LagBytes <= maxLagBytes && s.LagSeconds <= maxLagSeconds
}

// Snapshot returns the status of every current target, sorted by shard,
// then primaries before replicas, then address.
func (m *Monitor) Snapshot() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	primaries := make(map[string]*endpoint)
	for _, ep := range m.endpoints {
		if ep.target.Role == RolePrimary {
			primaries[ep.target.Shard] = ep
		}
	}
	out := make([]Status, 0, len(m.endpoints))
	for _, ep := range m.endpoints {
		out = append(out, ep.status(primaries[ep.target.Shard]))
	}
	slices.SortFunc(out, func(a, b Status) int {
		return cmp.Or(
			cmp.Compare(a.Shard, b.Shard),
			cmp.Compare(roleOrder(a.Role), roleOrder(b.Role)),
			cmp.Compare(a.Addr, b.Addr),
		)
	})
	return out
}

// roleOrder sorts primaries first, fenced servers last.
func roleOrder(role string) int {
	switch role {
	case RolePrimary:
		return 0
	case RoleFenced:
		return 2
	}
	return 1
}

// HealthyReplicas returns the replicas of shard for which
// [Status.Healthy](maxLagBytes, maxLagSeconds) holds, least lagging first.
func (m *Monitor) HealthyReplicas(shard string, maxLagBytes uint64, maxLagSeconds float64) []Status {
	var out []Status
	for _, s := range m.Snapshot() {
		if s.Shard == shard && s.Healthy(maxLagBytes, maxLagSeconds) {
			out = append(out, s)
		}
	}
	slices.SortStableFunc(out, func(a, b Status) int { return cmp.Compare(a.LagBytes, b.LagBytes) })
	return out
}

// ReplayedAtLeast reports whether the endpoint at addr is up and, at its
// latest probe, had replayed (or, for a primary, written) the WAL up to
// lsn, so that a transaction that committed at lsn is visible on it. A
// probe is a lower bound, so a true answer stays true while the endpoint is
// up; false may be stale by up to one probe interval. Unknown addresses
// give false.
func (m *Monitor) ReplayedAtLeast(addr string, lsn LSN) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ep := range m.endpoints {
		if ep.target.Addr == addr && ep.up && ep.hasObs && ep.obs.lsn >= lsn {
			return true
		}
	}
	return false
}

// status derives ep's status; primary is the endpoint of its shard's
// primary, or nil. Both are guarded by Monitor.mu.
func (ep *endpoint) status(primary *endpoint) Status {
	s := Status{
		Target:              ep.target,
		Up:                  ep.up,
		LastError:           ep.lastErr,
		ConsecutiveFailures: ep.consecutive,
		ProbeFailures:       ep.failures,
		LastProbe:           ep.lastProbe,
		Observed:            ep.hasObs,
		InRecovery:          ep.obs.inRecovery,
		LSN:                 ep.obs.lsn,
	}
	if ep.target.Role != RoleReplica || !ep.hasObs || primary == nil || !primary.hasObs {
		return s
	}
	s.LagKnown, s.LagBytes, s.LagSeconds = replicaLag(primary.obs, ep.obs)
	return s
}

// replicaLag derives a replica's lag from the latest observations of it
// and of its shard's primary; ok is false when they do not allow it (the
// primary is in recovery or the replica is not).
func replicaLag(primary, replica observation) (ok bool, bytes uint64, seconds float64) {
	if primary.inRecovery || !replica.inRecovery {
		return false, 0, 0
	}
	bytes = lagBytes(primary.lsn, replica.lsn)
	switch {
	case bytes == 0:
		seconds = 0
	case !replica.replayKnown:
		seconds = math.Inf(1)
	default:
		seconds = max(replica.replayAge, 0)
	}
	return true, bytes, seconds
}
