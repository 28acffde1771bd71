package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pgshard/pgshard/replication/failover"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/shardmap/meta"
)

// TestMetaMetrics: a meta member's /metrics counts the workflow's steps
// and switches, times a failover from detection to the new primary, says
// whether it leads, and wants the token.
func TestMetaMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	node, err := meta.Open(ctx, meta.Config{ID: "m1", RaftAddr: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	if err := node.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if err := node.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	m := newMetaMetrics(node)
	t0 := time.Now()
	for _, e := range []failover.Event{
		{Shard: "s1", Kind: shardmap.Failover, Step: failover.EventDetect, At: t0},
		{Shard: "s1", Kind: shardmap.Failover, Step: failover.StepFence, At: t0.Add(10 * time.Millisecond)},
		{Shard: "s1", Kind: shardmap.Failover, Step: failover.EventFenceOld, At: t0.Add(20 * time.Millisecond), Err: errors.New("dead")},
		{Shard: "s1", Kind: shardmap.Failover, Step: failover.EventDone, At: t0.Add(1500 * time.Millisecond)},
	} {
		m.event(e)
	}
	if got := testutil.ToFloat64(m.switches.WithLabelValues("failover")); got != 1 {
		t.Errorf("switches = %v", got)
	}
	if got := testutil.ToFloat64(m.steps.WithLabelValues("failover", failover.EventFenceOld, "error")); got != 1 {
		t.Errorf("failed fence-old steps = %v", got)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.serve(sctx, ln, "tok") }()
	defer func() { stop(); <-done }()
	get := func(auth string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ln.Addr().String()+"/metrics", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d", code)
	}
	code, body := get("Bearer tok")
	if code != http.StatusOK {
		t.Fatalf("with the token: %d %s", code, body)
	}
	for _, want := range []string{"pgshard_meta_leader 1", `pgshard_failover_duration_seconds_count{kind="failover"} 1`,
		`pgshard_failover_duration_seconds_bucket{kind="failover",le="2"} 1`, `pgshard_failover_duration_seconds_bucket{kind="failover",le="1"} 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key
// into dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "meta.crt"), filepath.Join(dir, "meta.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestMetaRunMetricsHTTPS: pgshard meta run with --tls-cert serves its
// /metrics over HTTPS with the API's certificate, behind the token.
func TestMetaRunMetricsHTTPS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	metricsAddr := freeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() {
		var out, errb strings.Builder
		done <- run(ctx, []string{"meta", "run", "--id", "m1", "--data-dir", filepath.Join(dir, "data"), "--bootstrap",
			"--raft-addr", freeAddr(t), "--api-addr", freeAddr(t), "--token", "tok", "--tls-cert", certFile, "--tls-key", keyFile,
			"--metrics-listen", metricsAddr, "--no-failover"}, nil, &out, &errb)
	}()
	defer func() { cancel(); <-done }()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+metricsAddr+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(b), "pgshard_meta_leader") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no HTTPS /metrics on %s: %v", metricsAddr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
