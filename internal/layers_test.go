// The test in this file checks the module's layering with `go list`: an
// import only points from a package to one in the same or a lower layer,
// test support is imported only by tests, and the shipped binary holds
// nothing of integration/. The layer order is the README's (Architecture).
package internal_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

const module = "github.com/pgshard/pgshard"

// layers lists the module's product folders from the bottom up; a
// package may import packages of its own layer and of the layers below.
// A package in no layer and in no other group below fails the test: add
// it where it belongs (and to the README's Architecture table).
var layers = [][]string{
	{"wire", "shardmap"},
	{"router"},
	{"replication"},
	{"cache"},
	{"proxy"},
	{"internal/controlplane"},
	{"cmd"},
}

// The other groups of packages.
var (
	// tools is code the binary and the tests share that sits beside the
	// layers: only cmd, integration/ and tests import it.
	tools = []string{"internal/pgcluster", "internal/demo"}
	// testSupport is imported only by tests and by the test kit under
	// integration/ (which may import anything).
	testSupport = []string{"internal/testutil", "shardmap/shardmaptest", "integration"}
	// binary is the shipped program: nothing of testSupport may be in
	// what it links.
	binary = "cmd/pgshard"
)

// knownExceptions are imports that break the rules today and are being
// removed; each is "importer -> imported" (folders relative to the
// module). Once an import is gone the test reports its entry as stale:
// delete the entry then.
var knownExceptions = map[string]bool{}

type listedPackage struct {
	ImportPath string
	GoFiles    []string
	Imports    []string
}

// goList runs `go list -json args` at the module's root and decodes its
// output.
func goList(t *testing.T, args ...string) []listedPackage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append([]string{"list", "-json"}, args...)...)
	cmd.Dir = ".." // this file is in internal/, one below the module's root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatalf("go list %s listed no packages", strings.Join(args, " "))
	}
	return pkgs
}

// local returns path relative to the module and whether it is in the
// module.
func local(path string) (string, bool) {
	if path == module {
		return "", true
	}
	rel, ok := strings.CutPrefix(path, module+"/")
	return rel, ok
}

// under reports whether folder rel is one of folders or below one.
func under(rel string, folders []string) bool {
	return slices.ContainsFunc(folders, func(f string) bool { return rel == f || strings.HasPrefix(rel, f+"/") })
}

// layerOf returns rel's layer, or -1 when it is in none.
func layerOf(rel string) int {
	for i, l := range layers {
		if under(rel, l) {
			return i
		}
	}
	return -1
}

// check returns why the product import from -> to (both module-relative)
// breaks the layering, or "".
func check(from, to string) string {
	switch {
	case under(to, testSupport) && !under(from, testSupport):
		return "test support is imported only by tests and integration/"
	case under(from, testSupport):
		return "" // the test kit may import anything
	case under(to, tools) && !under(from, tools) && !under(from, []string{"cmd"}):
		return "internal/pgcluster and internal/demo are imported only by cmd, integration/ and tests"
	case under(from, tools):
		return ""
	}
	lf, lt := layerOf(from), layerOf(to)
	if lt > lf {
		return "a package may not import one of a higher layer (README, Architecture)"
	}
	return ""
}

// TestLayering fails for an import from a lower layer to a higher one,
// test support imported by product code, a package in no layer, and a
// shipped binary that links test support.
func TestLayering(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range goList(t, "./...") {
		from, ok := local(p.ImportPath)
		if !ok || len(p.GoFiles) == 0 {
			continue // not ours, or tests only (like this one)
		}
		if layerOf(from) < 0 && !under(from, tools) && !under(from, testSupport) {
			t.Errorf("package %s is in no layer: add it to layers in internal/layers_test.go and to the README", from)
			continue
		}
		for _, imp := range p.Imports {
			to, ok := local(imp)
			if !ok {
				continue
			}
			why := check(from, to)
			if why == "" {
				continue
			}
			edge := from + " -> " + to
			if knownExceptions[edge] {
				seen[edge] = true
				continue
			}
			t.Errorf("%s imports %s: %s", from, to, why)
		}
	}
	for edge := range knownExceptions {
		if !seen[edge] {
			t.Errorf("known exception %q no longer occurs: remove it from knownExceptions", edge)
		}
	}

	bin := goList(t, "-deps", "./"+binary)
	for _, p := range bin {
		if rel, ok := local(p.ImportPath); ok && under(rel, testSupport) {
			t.Errorf("the shipped binary (%s) links %s", binary, rel)
		}
	}
}

// TestLayerRules checks the rules themselves on made-up imports, so a
// change to them that lets everything through does not go unnoticed.
func TestLayerRules(t *testing.T) {
	for _, c := range []struct {
		from, to string
		ok       bool
	}{
		{"router", "shardmap", true},
		{"router/plan", "wire", true},
		{"proxy", "router/plan", true},
		{"proxy/pool", "wire", true},
		{"cmd/pgshard", "internal/controlplane", true},
		{"cmd/pgshard", "internal/pgcluster", true},
		{"internal/demo", "internal/pgcluster", true},
		{"internal/demo", "proxy", true},
		{"integration/metacluster", "cmd/pgshard", true},
		{"integration/difftest", "internal/testutil", true},
		{"wire", "shardmap", true},
		{"shardmap/metarpc", "replication/health", false},
		{"shardmap", "router", false},
		{"router", "proxy", false},
		{"replication/failover", "proxy/pool", false},
		{"proxy", "internal/controlplane", false},
		{"internal/controlplane", "cmd/pgshard", false},
		{"proxy", "internal/pgcluster", false},
		{"proxy", "integration", false},
		{"cmd/pgshard", "integration/metacluster", false},
		{"replication/health", "internal/testutil", false},
		{"shardmap/meta", "shardmap/shardmaptest", false},
		{"integration/failovertest", "shardmap/shardmaptest", true},
	} {
		if got := check(c.from, c.to) == ""; got != c.ok {
			t.Errorf("%s -> %s allowed = %v, want %v", c.from, c.to, got, c.ok)
		}
	}
}
