package meta

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The fixtures in testdata/commands are log entries as this package wrote
// them, one file per type and version. They must stay readable forever:
// logs hold them. A fixture's file is never changed; a new payload version
// gets a new file, and the test of the old one keeps passing.
var fixtures = []struct {
	file string
	typ  cmdType
	at   time.Time
	body any
}{
	{"apply_map.v1.json", cmdApplyMap, time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC), &applyMapCmd{
		MapYAML:     "epoch: 1\nshards:\n  - {name: s1, primary: \"10.0.0.1:5432\"}\ndistributions:\n  - name: users\n    key_type: bigint\n    strategy: range\n    intervals:\n      - {lo: -inf, hi: +inf, shard: s1}\ntables:\n  - {name: public.users, distribution: users, key: id}\n",
		ExpectEpoch: 0, Comment: "first map", Author: "dba@example.com",
	}},
	{"proxy_heartbeat.v1.json", cmdProxyHeartbeat, time.Date(2025, 3, 1, 12, 0, 1, 0, time.UTC), &heartbeatCmd{
		ProxyID: "proxy-a", Addr: "10.1.0.1:6432", AppliedEpoch: 1, LeaseNanos: int64(10 * time.Second),
	}},
	{"proxy_deregister.v1.json", cmdProxyDeregister, time.Date(2025, 3, 1, 12, 0, 2, 0, time.UTC), &deregisterCmd{ProxyID: "proxy-a"}},
	{"tick.v1.json", cmdTick, time.Date(2025, 3, 1, 12, 0, 3, 0, time.UTC), &tickCmd{ForgetNanos: int64(24 * time.Hour)}},
	{"member_api_addr.v1.json", cmdMemberAPIAddr, time.Date(2025, 3, 1, 12, 0, 4, 0, time.UTC), &memberCmd{ID: "meta-1", APIAddr: "10.2.0.1:7200"}},
	{"workflow_put.v1.json", cmdWorkflowPut, time.Date(2025, 3, 1, 12, 0, 5, 0, time.UTC), &workflowPutCmd{
		ID: "reshard-users-1", Kind: "resharding", ExpectVersion: 3, State: []byte(`{"step":"copy","copied":1000}`),
	}},
}

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "commands", name))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(b, []byte("\n"))
}

// TestDecodeFixtures: a binary reads the entries older binaries wrote.
func TestDecodeFixtures(t *testing.T) {
	for _, f := range fixtures {
		t.Run(f.file, func(t *testing.T) {
			c, err := decodeCommand(readFixture(t, f.file))
			if err != nil {
				t.Fatal(err)
			}
			if c.typ != f.typ || !c.at.Equal(f.at) || !reflect.DeepEqual(c.body, f.body) {
				t.Errorf("decoded %s %v %#v, want %s %v %#v", c.typ, c.at, c.body, f.typ, f.at, f.body)
			}
		})
	}
	// Every command type has a fixture of every version it reads.
	for typ, spec := range commands {
		for v := 1; v <= spec.version; v++ {
			name := string(typ) + ".v" + string(rune('0'+v)) + ".json"
			if _, err := os.Stat(filepath.Join("testdata", "commands", name)); err != nil {
				t.Errorf("command %s version %d has no fixture %s", typ, v, name)
			}
		}
	}
}

// TestEncodeCurrentVersion: what this binary writes is byte for byte the
// fixture of the current version, so a change to a payload cannot go
// unnoticed: it needs a new version (and a new fixture).
func TestEncodeCurrentVersion(t *testing.T) {
	for _, f := range fixtures {
		if !strings.HasSuffix(f.file, ".v1.json") || commands[f.typ].version != 1 {
			continue // an old version: decoded only
		}
		got, err := encodeCommand(f.typ, f.at, f.body)
		if err != nil {
			t.Fatal(err)
		}
		if want := readFixture(t, f.file); !bytes.Equal(got, want) {
			t.Errorf("%s: encoded\n%s\nwant\n%s", f.file, got, want)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range []struct {
		name, entry, want string
		unknown           bool // errUnknownCommand
	}{
		{"future type", `{"v":1,"type":"reshard_step","at":"2025-03-01T12:00:00Z","payload":{"step":"copy"}}`,
			`unknown command type "reshard_step"`, true},
		{"future version", `{"v":2,"type":"apply_map","at":"2025-03-01T12:00:00Z","payload":{"map_yaml":"","expect_epoch":0}}`,
			"version 2, this pgshard reads versions 1 to 1", true},
		{"version 0", `{"v":0,"type":"tick","at":"2025-03-01T12:00:00Z","payload":{"forget_ns":0}}`, "version 0", true},
		{"no type", `{"v":1,"at":"2025-03-01T12:00:00Z","payload":{}}`, "no command type", true},
		{"new payload field", `{"v":1,"type":"tick","at":"2025-03-01T12:00:00Z","payload":{"forget_ns":0,"extra":1}}`, `unknown field "extra"`, false},
		{"new envelope field", `{"v":1,"type":"tick","at":"2025-03-01T12:00:00Z","payload":{},"trace":"x"}`, `unknown field "trace"`, false},
		{"no time", `{"v":1,"type":"tick","payload":{"forget_ns":0}}`, "has no time", false},
		{"no payload", `{"v":1,"type":"tick","at":"2025-03-01T12:00:00Z"}`, "bad payload", false},
		{"not json", "\x00\x01raft", "not a command envelope", false},
		{"trailing data", `{"v":1,"type":"tick","at":"2025-03-01T12:00:00Z","payload":{}} {}`, "trailing data", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeCommand([]byte(tc.entry))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if got := errors.Is(err, errUnknownCommand); got != tc.unknown {
				t.Errorf("errors.Is(errUnknownCommand) = %v, want %v", got, tc.unknown)
			}
		})
	}
}

// TestApplyUnknownPanics: a committed entry this binary cannot read stops
// the state machine, loudly, and leaves the state as it was.
func TestApplyUnknownPanics(t *testing.T) {
	f := newFSM(testLogger(t))
	apply(t, f, t0, cmdApplyMap, &applyMapCmd{MapYAML: mapYAML(t, testMap(t, 100), 1)})
	before := f.state()
	entry := readFixture(t, "apply_map.v1.json")
	entry = bytes.Replace(entry, []byte(`"type":"apply_map"`), []byte(`"type":"failover_step"`), 1)
	func() {
		defer func() {
			r := recover()
			if r == nil || !strings.Contains(r.(string), `unknown command type "failover_step"`) {
				t.Fatalf("recovered %v, want a panic about the unknown type", r)
			}
		}()
		f.Apply(rlog(entry))
	}()
	if f.state() != before {
		t.Error("the state changed")
	}
}

// TestDecodeUpgradesOldVersion shows the path a newer binary takes: here
// tick gets a (pretend) version 2 whose decoder still reads version 1
// entries, upgrading them, and refuses version 3.
func TestDecodeUpgradesOldVersion(t *testing.T) {
	type tickV2 struct {
		ForgetNanos int64  `json:"forget_ns"`
		Reason      string `json:"reason"`
	}
	old := commands[cmdTick]
	t.Cleanup(func() { commands[cmdTick] = old })
	commands[cmdTick] = cmdSpec{version: 2, decode: func(v int, payload []byte) (any, error) {
		if v == 1 {
			c, err := decodeV1[tickCmd](1, payload)
			if err != nil {
				return nil, err
			}
			return &tickV2{ForgetNanos: c.(*tickCmd).ForgetNanos, Reason: "lease"}, nil
		}
		var c tickV2
		return &c, strictUnmarshal(payload, &c)
	}}

	c, err := decodeCommand(readFixture(t, "tick.v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (&tickV2{ForgetNanos: int64(24 * time.Hour), Reason: "lease"}); !reflect.DeepEqual(c.body, want) {
		t.Errorf("v1 entry decoded to %#v, want %#v", c.body, want)
	}
	if _, err := decodeCommand([]byte(`{"v":2,"type":"tick","at":"2025-03-01T12:00:00Z","payload":{"forget_ns":1,"reason":"x"}}`)); err != nil {
		t.Errorf("v2 entry: %v", err)
	}
	if _, err := decodeCommand([]byte(`{"v":3,"type":"tick","at":"2025-03-01T12:00:00Z","payload":{}}`)); !errors.Is(err, errUnknownCommand) {
		t.Errorf("v3 entry: %v, want errUnknownCommand", err)
	}
}
