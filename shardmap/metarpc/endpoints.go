package metarpc

import (
	"fmt"
	"math"
	"regexp"
	"unicode/utf8"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/metapb"
)

// The shards as ListShards reports them: the map's shards with the health
// of their endpoints, as the answering member knows it from the Health
// hook (ServerOptions.Health) and the proxies' reports (Store.Reports).

// The roles of an endpoint in its shard (EndpointStatus.Role).
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
	RoleFenced  = "fenced"
)

// The health states of an endpoint (EndpointStatus.State).
const (
	StateUp      = "up"
	StateDown    = "down"
	StateUnknown = "unknown" // not probed by the answering member (yet)
)

// maxLastError bounds the probe error ListShards reports per endpoint.
const maxLastError = 512

// ShardStatus is a shard of the map with the health of its endpoints.
type ShardStatus struct {
	// Shard is the shard as the map has it, Fenced and Switch included.
	shardmap.Shard
	// Endpoints are the primary, the replicas and the fenced endpoints,
	// in that order.
	Endpoints []EndpointStatus
}

// EndpointStatus is one PostgreSQL server of a shard and its health.
type EndpointStatus struct {
	Addr string // host:port
	// Role is RolePrimary, RoleReplica or RoleFenced, as the map says.
	Role string
	// State is StateUp, StateDown or StateUnknown (the answering member
	// runs no health monitor, or has not probed the endpoint yet). The
	// fields below up to LastError are only meaningful when it is known.
	State string
	// InRecovery is pg_is_in_recovery() at the latest successful probe.
	InRecovery bool
	// LagKnown says whether LagBytes and LagSeconds are set (an observed
	// replica of an observed primary). LagSeconds may be +Inf: the
	// replica replayed nothing since it started.
	LagKnown   bool
	LagBytes   uint64
	LagSeconds float64
	// LastError is the latest failed probe's error, credentials removed;
	// "" when the latest probe succeeded.
	LastError string
	// UnreachableReports is how many live proxies report that they cannot
	// reach the endpoint, of ReportingProxies that reported within their
	// lease. Both are 0 when the answering member is not the leader.
	UnreachableReports int
	ReportingProxies   int
}

// Up reports whether the latest probe of the endpoint succeeded.
func (e EndpointStatus) Up() bool { return e.State == StateUp }

// EndpointHealth is one endpoint of the shard map as this member's health
// monitor last saw it: what the Health hook of [ServerOptions] returns.
// The control plane fills it from a replication/health monitor; this
// package only reports it.
type EndpointHealth struct {
	Shard string
	Addr  string // host:port
	// Probed says a probe of the endpoint has finished; the fields below
	// mean nothing before.
	Probed bool
	// Up says the latest probe succeeded.
	Up bool
	// InRecovery is pg_is_in_recovery() at the latest successful probe.
	InRecovery bool
	// LagKnown says whether LagBytes and LagSeconds are set (an observed
	// replica of an observed primary); LagSeconds may be +Inf.
	LagKnown   bool
	LagBytes   uint64
	LagSeconds float64
	// LastError is the latest failed probe's error; nil when it
	// succeeded. ListShards reports it with credentials removed.
	LastError error
}

// healthIndex finds the Health hook's status of an endpoint.
type healthIndex map[[2]string]EndpointHealth // by shard, addr

func newHealthIndex(statuses []EndpointHealth) healthIndex {
	idx := make(healthIndex, len(statuses))
	for _, st := range statuses {
		idx[[2]string{st.Shard, st.Addr}] = st
	}
	return idx
}

// endpointStatus is the status of one endpoint of shard; idx is nil
// without a Health hook.
func endpointStatus(shard, addr, role string, idx healthIndex, store Store) *metapb.EndpointStatus {
	es := &metapb.EndpointStatus{Addr: addr, Role: role, State: StateUnknown}
	if st, ok := idx[[2]string{shard, addr}]; ok && st.Probed {
		es.Up = st.Up
		es.State = StateDown
		if st.Up {
			es.State = StateUp
		}
		es.InRecovery = st.InRecovery
		es.LagKnown, es.LagBytes, es.LagSeconds = st.LagKnown, st.LagBytes, st.LagSeconds
		if st.LastError != nil {
			es.LastError = redactSecrets(st.LastError.Error())
		}
	}
	un, rep := store.Reports(addr)
	es.UnreachableReports, es.ReportingProxies = clampUint32(un), clampUint32(rep)
	return es
}

func clampUint32(n int) uint32 { return uint32(min(max(n, 0), math.MaxUint32)) }

// shardsToProto lists a map's shards as ListShards reports them, with the
// health of their endpoints from idx (nil: unknown) and the store's
// reports.
func shardsToProto(m *shardmap.Map, idx healthIndex, store Store) []*metapb.Shard {
	out := make([]*metapb.Shard, 0, len(m.Shards))
	for _, s := range m.Shards {
		ps := &metapb.Shard{Name: s.Name, Primary: s.Primary.String(), State: string(s.State)}
		if ps.State == "" {
			ps.State = string(shardmap.StateActive)
		}
		ps.Endpoints = append(ps.Endpoints, endpointStatus(s.Name, ps.Primary, RolePrimary, idx, store))
		for _, r := range s.Replicas {
			ps.Replicas = append(ps.Replicas, r.String())
			ps.Endpoints = append(ps.Endpoints, endpointStatus(s.Name, r.String(), RoleReplica, idx, store))
		}
		for _, f := range s.Fenced {
			ps.Fenced = append(ps.Fenced, f.String())
			ps.Endpoints = append(ps.Endpoints, endpointStatus(s.Name, f.String(), RoleFenced, idx, store))
		}
		if sw := s.Switch; sw != nil {
			ps.Switch = &metapb.ShardSwitch{Kind: string(sw.Kind), From: endpointString(sw.From), To: endpointString(sw.To), Step: sw.Step, Reason: sw.Reason}
		}
		out = append(out, ps)
	}
	return out
}

// endpointString is e as host:port, or "" for the zero Endpoint.
func endpointString(e shardmap.Endpoint) string {
	if e == (shardmap.Endpoint{}) {
		return ""
	}
	return e.String()
}

// parseEndpoint parses host:port; "" is the zero Endpoint.
func parseEndpoint(s string) (shardmap.Endpoint, error) {
	if s == "" {
		return shardmap.Endpoint{}, nil
	}
	return shardmap.ParseEndpoint(s)
}

// shardsFromProto parses the shards ListShards sent.
func shardsFromProto(ps []*metapb.Shard) ([]ShardStatus, error) {
	out := make([]ShardStatus, 0, len(ps))
	for _, p := range ps {
		s := shardmap.Shard{Name: p.GetName(), State: shardmap.ShardState(p.GetState())}
		var err error
		if s.Primary, err = shardmap.ParseEndpoint(p.GetPrimary()); err != nil {
			return nil, fmt.Errorf("shard %s: primary: %w", s.Name, err)
		}
		if s.Replicas, err = parseEndpoints(p.GetReplicas()); err != nil {
			return nil, fmt.Errorf("shard %s: replica: %w", s.Name, err)
		}
		if s.Fenced, err = parseEndpoints(p.GetFenced()); err != nil {
			return nil, fmt.Errorf("shard %s: fenced: %w", s.Name, err)
		}
		if psw := p.GetSwitch(); psw != nil {
			sw := &shardmap.Switch{Kind: shardmap.SwitchKind(psw.GetKind()), Step: psw.GetStep(), Reason: psw.GetReason()}
			if sw.From, err = parseEndpoint(psw.GetFrom()); err != nil {
				return nil, fmt.Errorf("shard %s: switch from: %w", s.Name, err)
			}
			if sw.To, err = parseEndpoint(psw.GetTo()); err != nil {
				return nil, fmt.Errorf("shard %s: switch to: %w", s.Name, err)
			}
			s.Switch = sw
		}
		ss := ShardStatus{Shard: s}
		for _, e := range p.GetEndpoints() {
			ss.Endpoints = append(ss.Endpoints, EndpointStatus{
				Addr:               e.GetAddr(),
				Role:               e.GetRole(),
				State:              e.GetState(),
				InRecovery:         e.GetInRecovery(),
				LagKnown:           e.GetLagKnown(),
				LagBytes:           e.GetLagBytes(),
				LagSeconds:         e.GetLagSeconds(),
				LastError:          e.GetLastError(),
				UnreachableReports: int(e.GetUnreachableReports()),
				ReportingProxies:   int(e.GetReportingProxies()),
			})
			if ss.Endpoints[len(ss.Endpoints)-1].State == "" {
				ss.Endpoints[len(ss.Endpoints)-1].State = StateUnknown
			}
		}
		out = append(out, ss)
	}
	return out, nil
}

func parseEndpoints(list []string) ([]shardmap.Endpoint, error) {
	var out []shardmap.Endpoint
	for _, v := range list {
		ep, err := shardmap.ParseEndpoint(v)
		if err != nil {
			return nil, err
		}
		out = append(out, ep)
	}
	return out, nil
}

// Secrets that an error text may carry: a password=... setting of a
// connection string, and the password of a URL's user info.
var (
	secretSetting = regexp.MustCompile(`(?i)\b(password|passwd|pwd|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S+)`)
	secretURL     = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):[^@\s]*@`)
)

// redactSecrets removes passwords from an error text and bounds its
// length, for errors that leave the member (ListShards' last_error).
func redactSecrets(s string) string {
	s = secretSetting.ReplaceAllString(s, "$1=REDACTED")
	s = secretURL.ReplaceAllString(s, "$1:REDACTED@")
	if len(s) > maxLastError {
		cut := maxLastError
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}
