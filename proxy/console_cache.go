package proxy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pgshard/pgshard/cache"
	"github.com/pgshard/pgshard/wire"
)

// The admin console's cache commands: SHOW CACHE and FLUSH CACHE.

func init() {
	consoleHelp = append(consoleHelp,
		[]string{"SHOW CACHE", "the hot-row cache: memory, hits, misses, bypasses by reason, hit ratio, fills, evictions, invalidations, each shard's invalidation stream, cacheable tables"},
		[]string{"FLUSH CACHE [table]", "drops every cached result, or those of one table (schema.table; public when unqualified)"},
	)
}

// cacheConsole answers the console's cache commands (cmd is upper-case,
// spaces collapsed); ok is false for other commands.
func (s *Server) cacheConsole(out []byte, cmd string) (_ []byte, _ *wire.Error, ok bool) {
	switch {
	case cmd == "SHOW CACHE":
		o, err := appendResult(out, []string{"item", "value"}, s.cacheRows())
		return o, err, true
	case cmd == "FLUSH CACHE" || strings.HasPrefix(cmd, "FLUSH CACHE "):
		if s.cache == nil {
			return out, &wire.Error{Code: wire.SQLStateFeatureNotSupported, Message: "the cache is off on this proxy",
				Hint: "Turn it on with cache.enabled in the proxy configuration."}, true
		}
		table := strings.ToLower(strings.Trim(strings.TrimSpace(strings.TrimPrefix(cmd, "FLUSH CACHE")), `"`))
		if table == "" {
			s.cache.c.Flush()
			s.log.Info("cache flushed from the admin console")
			return wire.AppendString(out, 'C', "FLUSH"), nil, true
		}
		if !strings.Contains(table, ".") {
			table = "public." + table
		}
		if _, ok := s.cache.cacheTables()[table]; !ok {
			return out, &wire.Error{Code: wire.SQLStateUndefinedTable, Message: fmt.Sprintf("table %s is not cacheable in the shard map", table),
				Hint: "SHOW CACHE lists the cacheable tables."}, true
		}
		s.cache.c.FlushTable(table)
		s.log.Info("cache flushed from the admin console", "table", table)
		return wire.AppendString(out, 'C', "FLUSH"), nil, true
	}
	return out, nil, false
}

// cacheRows are the rows of SHOW CACHE.
func (s *Server) cacheRows() [][]string {
	sc := s.cache
	if sc == nil {
		return [][]string{{"enabled", "off"}}
	}
	used, budget := sc.c.Bytes()
	rows := [][]string{
		{"enabled", "on"}, {"epoch", strconv.FormatUint(sc.c.Epoch(), 10)},
		{"bytes", strconv.FormatInt(used, 10)}, {"max_bytes", strconv.FormatInt(budget, 10)},
		{"max_stream_lag", sc.cfg.MaxStreamLag.D().String()}, {"database", sc.cfg.Database},
	}
	counts := cacheCounts(sc.c)
	hits, misses := counts["lookups hit"], counts["lookups miss"]
	total := 0.0
	for k, v := range counts {
		if strings.HasPrefix(k, "lookups ") {
			total += v
		}
	}
	ratio := "0"
	if total > 0 {
		ratio = strconv.FormatFloat(hits/total, 'f', 3, 64)
	}
	rows = append(rows, []string{"hits", ftoa(hits)}, []string{"misses", ftoa(misses)}, []string{"hit_ratio", ratio})
	keys := make([]string, 0, len(counts))
	for k := range counts {
		if k != "lookups hit" && k != "lookups miss" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		rows = append(rows, []string{strings.ReplaceAll(k, " ", "."), ftoa(counts[k])})
	}
	shards := sc.c.Shards()
	slices.SortFunc(shards, func(a, b cache.ShardInfo) int { return strings.Compare(a.Shard, b.Shard) })
	for _, sh := range shards {
		state := "serving"
		if sh.Status != cache.Miss {
			state = "bypassed (" + sh.Status.String() + ")"
		}
		rows = append(rows, []string{"shard." + sh.Shard, fmt.Sprintf("%s, stream applied %s, heard %s ago, tables %s",
			state, sh.Applied, sh.SinceBeat.Round(time.Millisecond), strings.Join(sh.Tables, " "))})
	}
	tables := sc.c.Tables()
	names := make([]string, 0, len(tables))
	for t := range tables {
		names = append(names, t)
	}
	slices.Sort(names)
	for _, t := range names {
		ts := tables[t]
		rows = append(rows, []string{"table." + t, fmt.Sprintf("ttl %s, max_entry_bytes %d", ts.TTL, ts.MaxEntryBytes)})
	}
	return rows
}

// cacheCounts reads the cache's counters: "lookups hit", "lookups
// bypass stream_down", "fills stored", "invalidations proxy key", ...
func cacheCounts(c *cache.Cache) map[string]float64 {
	out := map[string]float64{}
	ch := make(chan prometheus.Metric, 64)
	go func() {
		for _, col := range c.Collectors() {
			col.Collect(ch)
		}
		close(ch)
	}()
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil || d.Counter == nil {
			continue
		}
		name := m.Desc().String()
		var short string
		switch {
		case strings.Contains(name, "pgshard_cache_lookups_total"):
			short = "lookups"
		case strings.Contains(name, "pgshard_cache_fills_total"):
			short = "fills"
		case strings.Contains(name, "pgshard_cache_evictions_total"):
			short = "evictions"
		case strings.Contains(name, "pgshard_cache_invalidations_total"):
			short = "invalidations"
		default:
			continue
		}
		var labels []string
		for _, l := range d.Label {
			if l.GetValue() != "" {
				labels = append(labels, l.GetValue())
			}
		}
		// result before reason, source before scope (labels come sorted by name).
		if (short == "lookups" || short == "invalidations") && len(labels) == 2 {
			labels[0], labels[1] = labels[1], labels[0]
		}
		key := strings.Join(append([]string{short}, labels...), " ")
		out[key] += d.Counter.GetValue()
	}
	return out
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
