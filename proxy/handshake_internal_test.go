package proxy

import (
	"encoding/binary"
	"maps"
	"strings"
	"testing"
)

// TestAppendReportedParams: the greeting reports every server parameter,
// with the client's startup value where the client set it under any case,
// and nothing the server does not report.
func TestAppendReportedParams(t *testing.T) {
	server := map[string]string{"DateStyle": "ISO, MDY", "application_name": "", "server_version": "15.8", "TimeZone": "UTC"}
	client := map[string]string{"datestyle": "German", "application_name": "app", "user": "alice", "extra_float_digits": "2"}
	got := map[string]string{}
	out := appendReportedParams(nil, server, client)
	for len(out) > 0 {
		if out[0] != 'S' || len(out) < 5 {
			t.Fatalf("not a ParameterStatus: %q", out)
		}
		n := int(binary.BigEndian.Uint32(out[1:5]))
		fields := strings.Split(string(out[5:1+n]), "\x00")
		if len(fields) != 3 || fields[2] != "" {
			t.Fatalf("bad ParameterStatus body %q", out[5:1+n])
		}
		got[fields[0]] = fields[1]
		out = out[1+n:]
	}
	want := map[string]string{"DateStyle": "German", "application_name": "app", "server_version": "15.8", "TimeZone": "UTC"}
	if !maps.Equal(got, want) {
		t.Fatalf("reported %v, want %v", got, want)
	}
}
