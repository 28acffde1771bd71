package netfault

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Available reports whether Blackhole can work here, and why not.
func Available() (bool, string) {
	if os.Geteuid() != 0 {
		return false, "netfault: iptables rules need root"
	}
	if iptablesPath() == "" {
		return false, "netfault: iptables is not installed (apt-get install iptables)"
	}
	return true, ""
}

// iptablesPath finds the iptables command, also where PATH lacks sbin.
func iptablesPath() string {
	if p, err := exec.LookPath("iptables"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/iptables", "/sbin/iptables"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// Require skips t when Blackhole cannot work here; under CI (CI=true) it
// fails it instead, so that a missing install step shows.
func Require(t testing.TB) {
	t.Helper()
	if ok, why := Available(); !ok {
		if os.Getenv("CI") == "true" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
}

// Blackhole drops every TCP packet on the loopback interface whose source
// or destination port is port, so that connections to a server listening
// there stall (no RST, no answer) instead of failing. It returns heal,
// which removes the rules; heal is idempotent and also runs when the test
// ends.
func Blackhole(t testing.TB, port int) (heal func()) {
	t.Helper()
	Require(t)
	tag := "pgshard-test-" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(port)
	p := strconv.Itoa(port)
	rules := [][]string{
		{"INPUT", "-i", "lo", "-p", "tcp", "--dport", p, "-j", "DROP", "-m", "comment", "--comment", tag},
		{"INPUT", "-i", "lo", "-p", "tcp", "--sport", p, "-j", "DROP", "-m", "comment", "--comment", tag},
	}
	var added [][]string
	var once sync.Once
	heal = func() {
		once.Do(func() {
			for _, r := range added {
				if err := iptables(append([]string{"-D"}, r...)...); err != nil {
					t.Errorf("netfault: heal port %d: %v", port, err)
				}
			}
		})
	}
	t.Cleanup(heal)
	for _, r := range rules {
		if err := iptables(append([]string{"-I"}, r...)...); err != nil {
			heal()
			t.Fatalf("netfault: blackhole port %d: %v", port, err)
		}
		added = append(added, r)
	}
	return heal
}

// iptables runs iptables with args, waiting for its lock (-w).
func iptables(args ...string) error {
	cmd := exec.Command(iptablesPath(), append([]string{"-w", "5"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
