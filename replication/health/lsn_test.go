package health

import (
	"math"
	"testing"
)

func TestParseLSN(t *testing.T) {
	tests := []struct {
		in      string
		want    LSN
		wantErr bool
	}{
		{in: "0/0", want: 0},
		{in: "0/1", want: 1},
		{in: "16/B374D848", want: 0x16_B374D848},
		{in: "16/b374d848", want: 0x16_B374D848},
		{in: "FFFFFFFF/FFFFFFFF", want: math.MaxUint64},
		{in: "00000001/00000000", want: 1 << 32},
		{in: "", wantErr: true},
		{in: "1", wantErr: true},
		{in: "/1", wantErr: true},
		{in: "1/", wantErr: true},
		{in: "1/2/3", wantErr: true},
		{in: "G/0", wantErr: true},
		{in: "100000000/0", wantErr: true}, // high part over 32 bits
		{in: "0/100000000", wantErr: true}, // low part over 32 bits
		{in: "-1/0", wantErr: true},
		{in: "+1/0", wantErr: true},
		{in: "0x1/0", wantErr: true},
		{in: " 1/0", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseLSN(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseLSN(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseLSN(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestLSNStringRoundTrip(t *testing.T) {
	for _, l := range []LSN{0, 1, 0x16_B374D848, 1 << 32, math.MaxUint64} {
		s := l.String()
		got, err := ParseLSN(s)
		if err != nil || got != l {
			t.Errorf("ParseLSN(%q) = %v, %v; want %v", s, got, err, l)
		}
	}
	if got := LSN(0x16_B374D848).String(); got != "16/B374D848" {
		t.Errorf("String = %q, want 16/B374D848", got)
	}
}

func TestLagBytes(t *testing.T) {
	tests := []struct {
		primary, replica LSN
		want             uint64
	}{
		{primary: 0, replica: 0, want: 0},
		{primary: 100, replica: 100, want: 0},
		{primary: 150, replica: 100, want: 50},
		{primary: 100, replica: 150, want: 0}, // replica probed after the primary
		{primary: 1 << 32, replica: 1<<32 - 8, want: 8},
		{primary: math.MaxUint64, replica: 0, want: math.MaxUint64},
	}
	for _, tt := range tests {
		if got := lagBytes(tt.primary, tt.replica); got != tt.want {
			t.Errorf("lagBytes(%v, %v) = %d, want %d", tt.primary, tt.replica, got, tt.want)
		}
	}
}

func TestReplicaLag(t *testing.T) {
	primary := observation{lsn: 1000}
	tests := []struct {
		name        string
		primary     observation
		replica     observation
		wantOK      bool
		wantBytes   uint64
		wantSeconds float64
	}{
		{
			name:    "caught up replica of an idle primary has no seconds lag",
			primary: primary, replica: observation{inRecovery: true, lsn: 1000, replayAge: 3600, replayKnown: true},
			wantOK: true, wantBytes: 0, wantSeconds: 0,
		},
		{
			name:    "replica ahead of an older primary probe",
			primary: primary, replica: observation{inRecovery: true, lsn: 1200, replayAge: 5, replayKnown: true},
			wantOK: true, wantBytes: 0, wantSeconds: 0,
		},
		{
			name:    "behind replica has the replay age as seconds lag",
			primary: primary, replica: observation{inRecovery: true, lsn: 400, replayAge: 2.5, replayKnown: true},
			wantOK: true, wantBytes: 600, wantSeconds: 2.5,
		},
		{
			name:    "negative replay age is clamped",
			primary: primary, replica: observation{inRecovery: true, lsn: 400, replayAge: -0.1, replayKnown: true},
			wantOK: true, wantBytes: 600, wantSeconds: 0,
		},
		{
			name:    "behind replica that replayed no transaction yet",
			primary: primary, replica: observation{inRecovery: true, lsn: 400},
			wantOK: true, wantBytes: 600, wantSeconds: math.Inf(1),
		},
		{
			name:    "primary in recovery gives no reference",
			primary: observation{inRecovery: true, lsn: 1000}, replica: observation{inRecovery: true, lsn: 400},
			wantOK: false,
		},
		{
			name:    "promoted replica is not lagging",
			primary: primary, replica: observation{lsn: 400},
			wantOK: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, b, s := replicaLag(tt.primary, tt.replica)
			if ok != tt.wantOK || b != tt.wantBytes || s != tt.wantSeconds {
				t.Errorf("replicaLag = %v, %d, %v; want %v, %d, %v", ok, b, s, tt.wantOK, tt.wantBytes, tt.wantSeconds)
			}
		})
	}
}

func TestStatusHealthy(t *testing.T) {
	good := Status{Target: Target{Role: RoleReplica}, Up: true, InRecovery: true, LagKnown: true, LagBytes: 100, LagSeconds: 1}
	if !good.Healthy(100, 1) {
		t.Errorf("%+v not healthy within its own lag", good)
	}
	bad := map[string]func(s *Status){
		"too many bytes":   func(s *Status) { s.LagBytes = 101 },
		"too many seconds": func(s *Status) { s.LagSeconds = 1.5 },
		"down":             func(s *Status) { s.Up = false },
		"promoted":         func(s *Status) { s.InRecovery = false },
		"lag unknown":      func(s *Status) { s.LagKnown = false },
		"primary":          func(s *Status) { s.Role = RolePrimary },
		"infinite seconds": func(s *Status) { s.LagSeconds = math.Inf(1) },
	}
	for name, change := range bad {
		s := good
		change(&s)
		if s.Healthy(100, 1) {
			t.Errorf("%s: %+v healthy", name, s)
		}
	}
}
