package meta

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Log entries.
//
// Every raft log entry this package writes is one JSON object, the
// envelope:
//
//	{"v":1,"type":"apply_map","at":"2025-01-02T03:04:05.123456789Z","payload":{...}}
//
// type names the command and v the version of its payload; at is the
// leader's clock when it proposed the entry, the only clock the replicated
// state ever reads. Each type has one handler (state.apply) and one decoder
// that reads every version of its payload this package ever wrote. Rules:
//
//   - A change to a payload, even a new optional field, is a new version.
//     Decoders refuse unknown fields, so an old binary never silently
//     drops what a newer one wrote.
//   - Entries already in logs are never rewritten: a decoder keeps reading
//     the old versions (the fixtures in testdata/commands pin them).
//   - A type or version this binary does not know is a fatal error when
//     applied (see fsm.Apply): skipping it would make this replica diverge.
//     A leader must therefore not write a new type before every voter runs
//     a binary that knows it (rolling upgrades: followers first).
//   - Workflows whose state proxies do not route by (resharding, 2PC)
//     keep records put by workflow_put (workflows.go), in a section of
//     their own in the snapshot (format 2).
//
// encoding/json output is deterministic for the structs used here (fields
// in declaration order, no maps), which the fixtures also check.

// cmdType names a command in the envelope.
type cmdType string

// The commands.
const (
	cmdApplyMap        cmdType = "apply_map"        // applyMapCmd
	cmdProxyHeartbeat  cmdType = "proxy_heartbeat"  // heartbeatCmd
	cmdProxyDeregister cmdType = "proxy_deregister" // deregisterCmd
	cmdTick            cmdType = "tick"             // tickCmd
	cmdMemberAPIAddr   cmdType = "member_api_addr"  // memberCmd
	cmdWorkflowPut     cmdType = "workflow_put"     // workflowPutCmd
)

// envelope is the JSON form of a log entry.
type envelope struct {
	Version int             `json:"v"`
	Type    cmdType         `json:"type"`
	At      time.Time       `json:"at"`
	Payload json.RawMessage `json:"payload"`
}

// command is a decoded log entry.
type command struct {
	typ  cmdType
	at   time.Time // the leader's clock when proposed, UTC
	body any       // one of the *Cmd types below, by typ
}

// applyMapCmd (apply_map v1) replaces the shard map if its epoch is still
// ExpectEpoch. MapYAML is the new map in shardmap's YAML form with epoch
// ExpectEpoch+1, validated by the leader before proposing.
type applyMapCmd struct {
	MapYAML     string `json:"map_yaml"`
	ExpectEpoch uint64 `json:"expect_epoch"`
	Comment     string `json:"comment,omitempty"`
	Author      string `json:"author,omitempty"`
}

// heartbeatCmd (proxy_heartbeat v1) registers or refreshes a proxy. The
// leader stamps its lease in, so all replicas judge liveness alike even if
// their configurations differ.
type heartbeatCmd struct {
	ProxyID      string `json:"proxy_id"`
	Addr         string `json:"addr"`
	AppliedEpoch uint64 `json:"applied_epoch"`
	LeaseNanos   int64  `json:"lease_ns"`
	// Incarnation names the proxy process's run (omitted when empty).
	Incarnation string `json:"incarnation,omitempty"`
}

// deregisterCmd (proxy_deregister v1) forgets a proxy that shut down.
type deregisterCmd struct {
	ProxyID string `json:"proxy_id"`
}

// tickCmd (tick v1) only advances the replicated clock (the envelope's at),
// so that proxies whose leases ran out are seen as dead even when nothing
// else is written, and forgets proxies dead for longer than ForgetNanos.
type tickCmd struct {
	ForgetNanos int64 `json:"forget_ns"`
}

// memberCmd (member_api_addr v1) records the client (gRPC) address of a
// raft member, so that followers can tell clients where the leader is.
type memberCmd struct {
	ID      string `json:"id"`
	APIAddr string `json:"api_addr"`
}

// workflowPutCmd (workflow_put v1) sets (or, with Delete, removes) the
// record of workflow ID if its version is still ExpectVersion (0: no
// record), by compare-and-set (workflows.go). Kind must match the
// record's. State is the workflow's own encoding (base64 in the JSON).
type workflowPutCmd struct {
	ID            string `json:"id"`
	Kind          string `json:"kind"`
	ExpectVersion uint64 `json:"expect_version"`
	State         []byte `json:"state,omitempty"`
	Delete        bool   `json:"delete,omitempty"`
}

// cmdSpec is what this binary knows about one command type.
type cmdSpec struct {
	version int // the version written, the highest read
	// decode reads a payload of any version from 1 to version.
	decode func(version int, payload []byte) (any, error)
}

// commands is the registry of command types.
var commands = map[cmdType]cmdSpec{
	cmdApplyMap:        {1, decodeV1[applyMapCmd]},
	cmdProxyHeartbeat:  {1, decodeV1[heartbeatCmd]},
	cmdProxyDeregister: {1, decodeV1[deregisterCmd]},
	cmdTick:            {1, decodeV1[tickCmd]},
	cmdMemberAPIAddr:   {1, decodeV1[memberCmd]},
	cmdWorkflowPut:     {1, decodeV1[workflowPutCmd]},
}

// decodeV1 decodes the payload of a command that has only had version 1.
// A command that gets a version 2 gets a decoder of its own that reads
// both (and upgrades v1 to the v2 struct).
func decodeV1[T any](version int, payload []byte) (any, error) {
	if version != 1 {
		return nil, fmt.Errorf("no decoder for version %d", version)
	}
	var c T
	if err := strictUnmarshal(payload, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// encodeCommand builds the log entry for a command of type typ proposed at
// time at.
func encodeCommand(typ cmdType, at time.Time, body any) ([]byte, error) {
	spec, ok := commands[typ]
	if !ok {
		return nil, fmt.Errorf("meta: encode: unknown command type %q", typ)
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("meta: encode %s: %w", typ, err)
	}
	data, err := json.Marshal(envelope{Version: spec.version, Type: typ, At: at.UTC(), Payload: payload})
	if err != nil {
		return nil, fmt.Errorf("meta: encode %s: %w", typ, err)
	}
	return data, nil
}

// errUnknownCommand is wrapped by decodeCommand for entries of a type or
// version this binary does not know: written by a newer pgshard.
var errUnknownCommand = errors.New("written by a newer pgshard, or corrupt")

// decodeCommand decodes a log entry. An error means the entry cannot be
// applied by this binary.
func decodeCommand(data []byte) (*command, error) {
	var env envelope
	if err := strictUnmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("meta: log entry is not a command envelope: %w", err)
	}
	spec, ok := commands[env.Type]
	switch {
	case env.Type == "":
		return nil, fmt.Errorf("meta: log entry has no command type: %w", errUnknownCommand)
	case !ok:
		return nil, fmt.Errorf("meta: unknown command type %q (version %d): %w", env.Type, env.Version, errUnknownCommand)
	case env.Version < 1 || env.Version > spec.version:
		return nil, fmt.Errorf("meta: command %s has version %d, this pgshard reads versions 1 to %d: %w",
			env.Type, env.Version, spec.version, errUnknownCommand)
	case env.At.IsZero():
		return nil, fmt.Errorf("meta: command %s v%d has no time", env.Type, env.Version)
	}
	body, err := spec.decode(env.Version, env.Payload)
	if err != nil {
		return nil, fmt.Errorf("meta: command %s v%d: bad payload: %w", env.Type, env.Version, err)
	}
	return &command{typ: env.Type, at: env.At.UTC(), body: body}, nil
}

// strictUnmarshal decodes exactly one JSON value into v, refusing unknown
// fields and trailing data.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}
