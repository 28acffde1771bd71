package metarpc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/pgshard/pgshard/shardmap"
)

// LeaderMetadataKey is the trailer in which a member that is not the
// leader names the leader's API address when it refuses a request.
const LeaderMetadataKey = "pgshard-leader"

// errorDomain and the reasons are the ErrorInfo details that carry typed
// errors over the wire (see meta.proto).
const (
	errorDomain      = "pgshard.meta.v1"
	reasonNotLeader  = "NOT_LEADER"
	reasonStaleEpoch = "STALE_EPOCH"
	reasonUnsafeMap  = "UNSAFE_MAP"
)

// LeaderRedirect is implemented by errors a [Store] returns when only the
// leader can do what was asked and this member is not the leader.
// LeaderAddress returns the leader's API address (where its MetaService
// listens, not its Raft address), or "" while no leader is known. The
// server answers codes.Unavailable naming it, and the client retries there.
type LeaderRedirect interface {
	LeaderAddress() string
}

// EpochConflict is implemented by errors a [Store] returns when a
// compare-and-set finds another epoch than the expected one. The server
// answers codes.FailedPrecondition with both epochs in the message.
type EpochConflict interface {
	StaleEpoch() (current, expected uint64)
}

// InvalidInput is implemented by errors a [Store] returns for a request it
// refuses as wrong in itself (an invalid map): when InvalidArgument
// reports true, the server answers codes.InvalidArgument with the error's
// text.
type InvalidInput interface {
	InvalidArgument() bool
}

// Errors that a Store or a server hook (ServerOptions.Switchover) wraps to
// choose the status code the client gets, with the error's text as the
// message; the client's errors match them too (errors.Is), by the status
// code the server answered with:
//
//	return 0, "", fmt.Errorf("shard %q: %w", shard, metarpc.ErrNotFound)
var (
	// ErrNotFound is codes.NotFound: what the request names (a shard)
	// does not exist.
	ErrNotFound = errors.New("not found")
	// ErrFailedPrecondition is codes.FailedPrecondition: the state does
	// not allow what was asked now (the shard is already switching, it
	// has no healthy replica). Nothing was done.
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrAborted is codes.Aborted: the operation started and was rolled
	// back (a switchover whose candidate did not catch up in time: the old
	// primary stays).
	ErrAborted = errors.New("aborted")
	// ErrInvalidArgument is codes.InvalidArgument about the request field
	// the RPC names (a "to" that is not a replica of the shard); the
	// client gets an *InvalidArgumentError.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrUnimplemented is codes.Unimplemented: the member does not offer
	// the RPC (Switchover without a failover controller). The server
	// answers it by itself; a hook need not use it.
	ErrUnimplemented = errors.New("not implemented by this meta cluster")
)

// codeSentinels are the sentinels above with the status code they stand
// for, in the order the server tries them (ErrInvalidArgument has its own
// error type on the client).
var codeSentinels = []struct {
	code codes.Code
	err  error
}{
	{codes.NotFound, ErrNotFound},
	{codes.FailedPrecondition, ErrFailedPrecondition},
	{codes.Aborted, ErrAborted},
	{codes.Unimplemented, ErrUnimplemented},
}

// sentinelOf returns the sentinel of code, or nil.
func sentinelOf(code codes.Code) error {
	for _, cs := range codeSentinels {
		if cs.code == code {
			return cs.err
		}
	}
	return nil
}

// codeError is a status error the client got, which also matches the
// sentinel of its code. Its text is the status error's.
type codeError struct {
	err      error // the status error
	sentinel error
}

func (e *codeError) Error() string   { return e.err.Error() }
func (e *codeError) Unwrap() []error { return []error{e.err, e.sentinel} }

// NotLeaderError says that the member asked is not the leader. The client
// follows it on its own; callers see it only when no leader could be
// reached.
type NotLeaderError struct {
	// Leader is the leader's API address, "" while none is known.
	Leader string
}

// Error says that this member is not the leader, and where it is.
func (e *NotLeaderError) Error() string {
	if e.Leader == "" {
		return "not the leader, and no leader is known yet"
	}
	return "not the leader; the leader is at " + e.Leader
}

// LeaderAddress implements [LeaderRedirect].
func (e *NotLeaderError) LeaderAddress() string { return e.Leader }

// GRPCStatus is the error's status: codes.Unavailable.
func (e *NotLeaderError) GRPCStatus() *status.Status {
	return withDetails(status.New(codes.Unavailable, e.Error()), &errdetails.ErrorInfo{
		Reason:   reasonNotLeader,
		Domain:   errorDomain,
		Metadata: map[string]string{"leader": e.Leader},
	})
}

// StaleEpochError says that a compare-and-set of the map lost: the map is
// no longer at the epoch the change was based on.
type StaleEpochError struct {
	Current, Expected uint64
}

// Error gives both epochs.
func (e *StaleEpochError) Error() string {
	return fmt.Sprintf("stale epoch: the map is at epoch %d, the change expected epoch %d", e.Current, e.Expected)
}

// StaleEpoch implements [EpochConflict].
func (e *StaleEpochError) StaleEpoch() (current, expected uint64) { return e.Current, e.Expected }

// GRPCStatus is the error's status: codes.FailedPrecondition.
func (e *StaleEpochError) GRPCStatus() *status.Status {
	return withDetails(status.New(codes.FailedPrecondition, e.Error()), &errdetails.ErrorInfo{
		Reason: reasonStaleEpoch,
		Domain: errorDomain,
		Metadata: map[string]string{
			"current":  strconv.FormatUint(e.Current, 10),
			"expected": strconv.FormatUint(e.Expected, 10),
		},
	})
}

// UnsafeMapError says that ApplyMap refused a map that would send writes
// to a server that is not a shard's real primary, or let a fenced server
// serve again (see [shardmap.CheckSuccessor]). Nothing was applied;
// ApplyMapOptions.Force applies it anyway. It matches
// ErrFailedPrecondition.
type UnsafeMapError struct {
	Hazards []shardmap.Hazard
}

// Error lists the hazards.
func (e *UnsafeMapError) Error() string {
	var b strings.Builder
	b.WriteString("unsafe map, not applied:")
	for i, h := range e.Hazards {
		if i > 0 {
			b.WriteString(";")
		}
		b.WriteString(" ")
		b.WriteString(h.String())
	}
	return b.String()
}

// Is matches ErrFailedPrecondition.
func (e *UnsafeMapError) Is(target error) bool { return target == ErrFailedPrecondition }

// GRPCStatus is the error's status: codes.FailedPrecondition, with an
// ErrorInfo (reason UNSAFE_MAP) and a PreconditionFailure detail whose
// violations are the hazards (type: the kind; subject: "shard/server").
func (e *UnsafeMapError) GRPCStatus() *status.Status {
	pf := &errdetails.PreconditionFailure{}
	for _, h := range e.Hazards {
		pf.Violations = append(pf.Violations, &errdetails.PreconditionFailure_Violation{
			Type: h.Kind, Subject: h.Shard + "/" + h.Server, Description: h.Reason,
		})
	}
	return withDetails(status.New(codes.FailedPrecondition, e.Error()),
		&errdetails.ErrorInfo{Reason: reasonUnsafeMap, Domain: errorDomain}, pf)
}

// unsafeMapFrom decodes the hazards of an UNSAFE_MAP status.
func unsafeMapFrom(st *status.Status) *UnsafeMapError {
	e := &UnsafeMapError{}
	for _, d := range st.Details() {
		pf, ok := d.(*errdetails.PreconditionFailure)
		if !ok {
			continue
		}
		for _, v := range pf.GetViolations() {
			shard, server, _ := strings.Cut(v.GetSubject(), "/")
			e.Hazards = append(e.Hazards, shardmap.Hazard{Kind: v.GetType(), Shard: shard, Server: server, Reason: v.GetDescription()})
		}
	}
	if len(e.Hazards) == 0 {
		e.Hazards = []shardmap.Hazard{{Reason: st.Message()}}
	}
	return e
}

// InvalidArgumentError says that a request field is wrong, with every
// problem found (for a map, one per problem Validate reports).
type InvalidArgumentError struct {
	// Field is the request field at fault, e.g. "map_yaml"; "" if unknown.
	Field    string
	Problems []string
}

// Error names the field and lists the problems.
func (e *InvalidArgumentError) Error() string {
	what := "argument"
	if e.Field != "" {
		what = e.Field
	}
	return "invalid " + what + ": " + strings.Join(e.Problems, "; ")
}

// InvalidArgument implements [InvalidInput].
func (e *InvalidArgumentError) InvalidArgument() bool { return true }

// GRPCStatus is the error's status: codes.InvalidArgument, with a
// BadRequest detail listing the problems.
func (e *InvalidArgumentError) GRPCStatus() *status.Status {
	br := &errdetails.BadRequest{}
	for _, p := range e.Problems {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: e.Field, Description: p})
	}
	return withDetails(status.New(codes.InvalidArgument, e.Error()), br)
}

// LaggingError is what Client.WaitApplied returns when live proxies had
// not applied the epoch when the wait ended.
type LaggingError struct {
	Epoch   uint64
	Proxies []ProxyStatus // the live proxies below Epoch
}

// Error names the lagging proxies.
func (e *LaggingError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d live prox", len(e.Proxies))
	if len(e.Proxies) == 1 {
		b.WriteString("y has")
	} else {
		b.WriteString("ies have")
	}
	fmt.Fprintf(&b, " not applied epoch %d:", e.Epoch)
	for i, p := range e.Proxies {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, " %s (at %s) at epoch %d", p.ID, p.Address, p.AppliedEpoch)
	}
	return b.String()
}

// withDetails adds details to st, or returns st unchanged if they cannot
// be encoded (which does not happen with the types above).
func withDetails(st *status.Status, details ...protoadapt.MessageV1) *status.Status {
	if d, err := st.WithDetails(details...); err == nil {
		return d
	}
	return st
}

// statusOf turns an error of a Store into the status the client gets.
// field names the request field an InvalidInput error is about. leader is
// set, with redirect true, when the error is a LeaderRedirect.
func statusOf(err error, field string) (st *status.Status, leader string, redirect bool) {
	var lr LeaderRedirect
	if errors.As(err, &lr) {
		leader = lr.LeaderAddress()
		return (&NotLeaderError{Leader: leader}).GRPCStatus(), leader, true
	}
	var ec EpochConflict
	if errors.As(err, &ec) {
		cur, exp := ec.StaleEpoch()
		return (&StaleEpochError{Current: cur, Expected: exp}).GRPCStatus(), "", false
	}
	var ii InvalidInput
	if errors.As(err, &ii) && ii.InvalidArgument() {
		var ia *InvalidArgumentError
		if errors.As(err, &ia) {
			return ia.GRPCStatus(), "", false
		}
		return (&InvalidArgumentError{Field: field, Problems: []string{err.Error()}}).GRPCStatus(), "", false
	}
	if errors.Is(err, ErrInvalidArgument) {
		return (&InvalidArgumentError{Field: field, Problems: []string{err.Error()}}).GRPCStatus(), "", false
	}
	for _, cs := range codeSentinels {
		if errors.Is(err, cs.err) {
			return status.New(cs.code, err.Error()), "", false
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, err.Error()), "", false
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, err.Error()), "", false
	}
	// An error carrying a status keeps it (with err's text); any other
	// is codes.Unknown.
	st, _ = status.FromError(err)
	return st, "", false
}

// typedError turns a status error an RPC returned into the typed errors
// above where the status says which one it is; other errors come back
// unchanged. trailer is the call's trailer metadata (may be nil).
func typedError(err error, trailer metadata.MD) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	info := errorInfo(st)
	switch st.Code() {
	case codes.Unavailable:
		if v := trailer.Get(LeaderMetadataKey); len(v) > 0 && v[0] != "" {
			return &NotLeaderError{Leader: v[0]}
		}
		if info != nil && info.GetReason() == reasonNotLeader {
			return &NotLeaderError{Leader: info.GetMetadata()["leader"]}
		}
	case codes.FailedPrecondition:
		if info != nil && info.GetReason() == reasonUnsafeMap {
			return unsafeMapFrom(st)
		}
		if info != nil && info.GetReason() == reasonDataNotMoved {
			return dataNotMovedFrom(st, info)
		}
		if info != nil && info.GetReason() == reasonStaleEpoch {
			cur, err1 := strconv.ParseUint(info.GetMetadata()["current"], 10, 64)
			exp, err2 := strconv.ParseUint(info.GetMetadata()["expected"], 10, 64)
			if err1 == nil && err2 == nil {
				return &StaleEpochError{Current: cur, Expected: exp}
			}
		}
	case codes.InvalidArgument:
		ia := &InvalidArgumentError{}
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, v := range br.GetFieldViolations() {
					ia.Field = v.GetField()
					ia.Problems = append(ia.Problems, v.GetDescription())
				}
			}
		}
		if len(ia.Problems) == 0 {
			ia.Problems = []string{st.Message()}
		}
		return ia
	}
	if sentinel := sentinelOf(st.Code()); sentinel != nil {
		return &codeError{err: err, sentinel: sentinel}
	}
	return err
}

// errorInfo returns st's ErrorInfo detail of our domain, or nil.
func errorInfo(st *status.Status) *errdetails.ErrorInfo {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == errorDomain {
			return info
		}
	}
	return nil
}
