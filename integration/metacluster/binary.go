package metacluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"
)

// buildTimeout bounds compiling the binary (a cold build cache on a
// 2-core machine takes about a minute).
const buildTimeout = 5 * time.Minute

// Build compiles ./cmd/pgshard of the module that contains the working
// directory (a test's working directory is its package's) into dir and
// returns the binary's path. It uses the Go toolchain the test binary was
// built with, so the binary matches the code under test.
func Build(dir string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("metacluster: build: %w", err)
	}
	root, err := moduleRoot(wd)
	if err != nil {
		return "", err
	}
	goBin, err := goTool()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "pgshard")
	cmd := exec.Command(goBin, "build", "-o", out, "./cmd/pgshard")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("metacluster: go build: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(buildTimeout):
		_ = cmd.Process.Kill()
		<-done
		err = fmt.Errorf("timed out after %s", buildTimeout)
	}
	if err != nil {
		return "", fmt.Errorf("metacluster: go build -o %s ./cmd/pgshard (in %s): %w\n%s", out, root, err, stderr.String())
	}
	return out, nil
}

// moduleRoot returns the nearest directory from dir upwards with a go.mod.
func moduleRoot(dir string) (string, error) {
	for d := dir; ; {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("metacluster: no go.mod in %s or above", dir)
		}
		d = parent
	}
}

// goTool returns the go command of the toolchain that built the test
// binary: $GOROOT/bin/go, else the build's GOROOT, else go from $PATH.
func goTool() (string, error) {
	roots := []string{os.Getenv("GOROOT")}
	//lint:ignore SA1019 the test binary runs on the machine that just built it, so its build GOROOT is the toolchain in use
	roots = append(roots, runtime.GOROOT())
	for _, r := range roots {
		if r == "" {
			continue
		}
		p := filepath.Join(r, "bin", "go")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath("go")
	if err != nil {
		return "", errors.New("metacluster: no go command: neither $GOROOT/bin/go nor the build's GOROOT exists, and go is not in $PATH")
	}
	return p, nil
}
