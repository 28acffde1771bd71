package proxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// scrape returns the proxy's /metrics text.
func scrape(t *testing.T, p *testProxy) string {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if p.cfg.AdminToken != "" {
		req.Header.Set("Authorization", "Bearer "+p.cfg.AdminToken)
	}
	p.srv.AdminHandler().ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Body)
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d %s", rec.Code, b)
	}
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
