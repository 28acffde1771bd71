package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pgshard/pgshard/shardmap"
)

func TestMapShow(t *testing.T) {
	c := startCtlMeta(t, "", ctlTokenOpts)
	r := c.cli(t, "map", "show").want(t, exitOK)
	ctlWantContains(t, "stdout", r.stdout, "no shard map has been applied yet")

	c.store.set(ctlParseMap(t, ctlMapYAML), "first map\nfor the test")
	r = c.cli(t, "map", "show").want(t, exitOK)
	ctlWantContains(t, "stdout", r.stdout, "# epoch:      1\n", "# applied at: ", "# comment:    first map\n#             for the test\n", "name: s1")
	// The table output is a map file.
	m, err := shardmap.ParseYAML([]byte(r.stdout))
	if err != nil {
		t.Fatalf("map show's output does not parse: %v\n%s", err, r.stdout)
	}
	if m.Epoch != 1 || len(m.Shards) != 2 {
		t.Errorf("parsed output: epoch %d, %d shards", m.Epoch, len(m.Shards))
	}

	r = c.cli(t, "map", "show", "-o", "json").want(t, exitOK)
	var got struct {
		Epoch     uint64    `json:"epoch"`
		AppliedAt time.Time `json:"applied_at"`
		Comment   string    `json:"comment"`
		MapYAML   string    `json:"map_yaml"`
		Map       mapJSON   `json:"map"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	if got.Epoch != 1 || got.AppliedAt.IsZero() || got.Comment != "first map\nfor the test" || !strings.Contains(got.MapYAML, "10.0.0.3:5432") {
		t.Errorf("json: %+v", got)
	}
	if len(got.Map.Shards) != 2 || got.Map.Shards[1].State != "readonly" || got.Map.Shards[0].Replicas[0] != "10.0.0.2:5432" {
		t.Errorf("json shards: %+v", got.Map.Shards)
	}
	if ivs := got.Map.Distributions[0].Intervals; len(ivs) != 2 || ivs[0].Lo != "-inf" || ivs[0].Hi != "1000" || ivs[1].Shard != "s2" {
		t.Errorf("json intervals: %+v", ivs)
	}
	if tb := got.Map.Tables[0]; tb.Name != "public.users" || tb.Kind != "sharded" || tb.Key != "id" {
		t.Errorf("json table: %+v", tb)
	}
}

func TestMapApply(t *testing.T) {
	c := startCtlMeta(t, ctlMapYAML, ctlTokenOpts)
	file := ctlWriteFile(t, "new.yaml", ctlChangedMapYAML)
	r := c.cli(t, "map", "apply", "-f", file, "--comment", "add s3").want(t, exitOK)
	ctlWantContains(t, "stdout", r.stdout, "Applied "+file+" as epoch 2 (was 1).")
	cur := c.store.Map()
	if cur.Epoch != 2 || cur.Comment != "add s3" || cur.Map.Shard("s3") == nil {
		t.Fatalf("after apply: epoch %d, comment %q", cur.Epoch, cur.Comment)
	}

	// From standard input, with an explicit epoch, in JSON.
	r = c.cliIn(t, strings.NewReader(ctlMapYAML), "map", "apply", "-f", "-", "--expect-epoch", "2", "-o", "json").want(t, exitOK)
	var got mapApplyResult
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	if got.Epoch != 3 || got.PreviousEpoch != 2 || got.File != "standard input" || got.Wait != nil {
		t.Errorf("json: %+v", got)
	}

	// Re-applying the map in force changes nothing: no new epoch.
	r = c.cliIn(t, strings.NewReader(ctlMapYAML), "map", "apply", "-f", "-", "-o", "json").want(t, exitOK)
	got = mapApplyResult{}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	if !got.Unchanged || got.Epoch != 3 || got.PreviousEpoch != 3 || c.store.Map().Epoch != 3 {
		t.Errorf("re-applied map in force: %+v, epoch now %d", got, c.store.Map().Epoch)
	}
	r = c.cliIn(t, strings.NewReader(ctlMapYAML), "map", "apply", "-f", "-").want(t, exitOK)
	ctlWantContains(t, "stdout", r.stdout, "Unchanged: standard input is the map in force at epoch 3; nothing applied.")

	r = c.cli(t, "map", "history", "--limit", "2").want(t, exitOK)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "EPOCH") || !strings.HasPrefix(lines[1], "3 ") || !strings.HasPrefix(lines[2], "2 ") || !strings.Contains(lines[2], "add s3") {
		t.Errorf("history:\n%s", r.stdout)
	}
	r = c.cli(t, "map", "history", "-o", "json").want(t, exitOK)
	var hist mapHistoryResult
	if err := json.Unmarshal([]byte(r.stdout), &hist); err != nil {
		t.Fatal(err)
	}
	if len(hist.Versions) != 3 || hist.Versions[2].Comment != "initial" || hist.Versions[0].Epoch != 3 {
		t.Errorf("json history: %+v", hist)
	}
}

func TestMapApplyInvalidMap(t *testing.T) {
	c := startCtlMeta(t, ctlMapYAML, ctlTokenOpts)
	r := c.cli(t, "map", "apply", "-f", ctlWriteFile(t, "bad.yaml", ctlInvalidMapYAML)).want(t, exitError)
	ctlWantContains(t, "stderr", r.stderr, "refused the map", "s9")
	// A file that does not parse is refused before anything is sent.
	r = c.cli(t, "map", "apply", "-f", ctlWriteFile(t, "typo.yaml", strings.Replace(ctlMapYAML, "key_type", "keytype", 1))).want(t, exitError)
	ctlWantContains(t, "stderr", r.stderr, "is not a shard map", "keytype", "line ")
	r = c.cli(t, "map", "apply", "-f", "/nonexistent/map.yaml").want(t, exitError)
	ctlWantContains(t, "stderr", r.stderr, "/nonexistent/map.yaml")
	if n := c.store.appliesCount(); n != 0 || c.store.Map().Epoch != 1 {
		t.Errorf("the map changed: %d applies, epoch %d", n, c.store.Map().Epoch)
	}
}

func TestMapApplyStaleEpoch(t *testing.T) {
	c := startCtlMeta(t, ctlMapYAML, ctlTokenOpts)
	file := ctlWriteFile(t, "new.yaml", ctlChangedMapYAML)
	r := c.cli(t, "map", "apply", "-f", file, "--expect-epoch", "5").want(t, exitError)
	ctlWantContains(t, "stderr", r.stderr, "stale epoch", "the map is at epoch 1, not 5", "--expect-epoch 5 is not the current epoch",
		"pgshard map diff -f "+file, "--expect-epoch 1")
	if n := c.store.appliesCount(); n != 0 {
		t.Errorf("%d applies", n)
	}
}

func TestMapApplyWait(t *testing.T) {
	c := startCtlMeta(t, ctlMapYAML, ctlTokenOpts)
	file := ctlWriteFile(t, "new.yaml", ctlChangedMapYAML)
	// No proxy: nothing to wait for.
	r := c.cli(t, "map", "apply", "-f", file, "--wait", "5s").want(t, exitOK)
	ctlWantContains(t, "stdout", r.stdout, "as epoch 2", "Every live proxy routes with epoch 2.")

	// A live proxy at epoch 2 never catches up with 3.
	if err := c.store.Heartbeat(t.Context(), "proxy-a", "10.0.1.1:6432", 2, nil); err != nil {
		t.Fatal(err)
	}
	// (Each apply below changes the map: a file that is the map in force
	// is not applied again.)
	back := ctlWriteFile(t, "back.yaml", ctlMapYAML)
	r = c.cli(t, "map", "apply", "-f", back, "--wait", "200ms").want(t, exitError)
	ctlWantContains(t, "stdout", r.stdout, "as epoch 3", "After 200ms, 1 live proxy still routes with an older epoch", "proxy-a", "10.0.1.1:6432")
	ctlWantContains(t, "stderr", r.stderr, "epoch 3 is applied, but not yet everywhere", "proxy-a")
	if c.store.Map().Epoch != 3 {
		t.Errorf("epoch %d after a lagging wait, want 3", c.store.Map().Epoch)
	}

	r = c.cli(t, "map", "apply", "-f", file, "--wait", "200ms", "-o", "json").want(t, exitError)
	var got mapApplyResult
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	if got.Wait == nil || got.Wait.Applied || len(got.Wait.Lagging) != 1 || got.Wait.Lagging[0].ID != "proxy-a" {
		t.Errorf("json: %+v", got)
	}
}

func TestMapDiff(t *testing.T) {
	c := startCtlMeta(t, ctlMapYAML, ctlTokenOpts)
	same := ctlWriteFile(t, "same.yaml", strings.Replace(ctlMapYAML, "epoch: 1", "epoch: 9", 1))
	r := c.cli(t, "map", "diff", "-f", same).want(t, exitOK)
	ctlWantContains(t, "stdout", r.stdout, "No differences between the map at epoch 1 and "+same)

	changed := ctlWriteFile(t, "changed.yaml", ctlChangedMapYAML)
	r = c.cli(t, "map", "diff", "-f", changed).want(t, 1)
	ctlWantContains(t, "stdout", r.stdout,
		"--- the map at epoch 1\n+++ "+changed+"\n",
		"shards:\n  ~ s2:\n      primary 10.0.0.3:5432 -> 10.0.0.9:5432\n  + s3: primary 10.0.0.5:5432, active\n",
		"distributions:\n  ~ users:\n      [500, 1000) moves from s1 to s2\n      [2000, +inf) moves from s2 to s3\n",
		"tables:\n  + public.orders: sharded by user_id in distribution users\n",
	)
	ctlWantContains(t, "stderr", r.stderr, "differ")

	r = c.cli(t, "map", "diff", "-f", changed, "-o", "json").want(t, 1)
	var got mapDiff
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	if got.Equal || len(got.Shards) != 2 || len(got.Distributions) != 1 || len(got.Distributions[0].Moves) != 2 || len(got.Tables) != 1 {
		t.Errorf("json: %+v", got)
	}

	// Trouble exits 2, like diff(1).
	r = c.cli(t, "map", "diff", "-f", ctlWriteFile(t, "bad.yaml", ctlInvalidMapYAML)).want(t, exitUsage)
	ctlWantContains(t, "stderr", r.stderr, "is not a valid map", "s9")
	r = runCtl(t, nil, "map", "diff", "-f", same, "--meta", c.addr, "--token", "wrong").want(t, exitUsage)
	ctlWantContains(t, "stderr", r.stderr, "--token")
}

func TestMapDiffWithoutMap(t *testing.T) {
	c := startCtlMeta(t, "", ctlTokenOpts)
	r := c.cli(t, "map", "diff", "-f", ctlWriteFile(t, "m.yaml", ctlMapYAML)).want(t, 1)
	ctlWantContains(t, "stdout", r.stdout, "--- the meta cluster (no map yet)", "  + s1: primary 10.0.0.1:5432, replicas 10.0.0.2:5432, active",
		"  + users: bigint keys by range: [-inf, 1000) on s1, [1000, +inf) on s2; default shard s1")
}

// ctlFailedOverMapYAML is ctlMapYAML after a failover of s1: 10.0.0.2 is
// its primary, the old primary 10.0.0.1 is fenced.
const ctlFailedOverMapYAML = `epoch: 1
shards:
  - {name: s1, primary: "10.0.0.2:5432", fenced: ["10.0.0.1:5432"]}
  - {name: s2, primary: "10.0.0.3:5432", state: readonly}
distributions:
  - name: users
    key_type: bigint
    strategy: range
    default_shard: s1
    intervals:
      - {lo: -inf, hi: 1000, shard: s1}
      - {lo: 1000, hi: +inf, shard: s2}
tables:
  - {name: public.users, distribution: users, key: id}
`

// Re-applying the original map file after a failover is refused (exit 4,
// nothing applied), naming the shard, the server and why; --force applies
// it.
func TestMapApplyUnsafeMap(t *testing.T) {
	c := startCtlMeta(t, ctlFailedOverMapYAML, ctlTokenOpts)
	file := ctlWriteFile(t, "original.yaml", ctlMapYAML)
	r := c.cli(t, "map", "apply", "-f", file).want(t, exitRefused)
	ctlWantContains(t, "stderr", r.stderr, "refused the map as unsafe; nothing was applied",
		"shard s1: primary 10.0.0.1:5432 is fenced in the current map", "shards rejoin", "--force", "split brain")
	dropped := ctlWriteFile(t, "dropped.yaml", strings.Replace(ctlFailedOverMapYAML, `, fenced: ["10.0.0.1:5432"]`, "", 1))
	r = c.cli(t, "map", "apply", "-f", dropped).want(t, exitRefused)
	ctlWantContains(t, "stderr", r.stderr, "shard s1: 10.0.0.1:5432 is fenced in the current map and the new map drops its fence")
	if n := c.store.appliesCount(); n != 0 || c.store.Map().Epoch != 1 {
		t.Fatalf("a refused map was applied: %d applies, epoch %d", n, c.store.Map().Epoch)
	}

	r = c.cli(t, "map", "apply", "-f", file, "--force", "--comment", "forced back").want(t, exitOK)
	ctlWantContains(t, "stdout", r.stdout, "as epoch 2 (was 1)")
	if p := c.store.Map().Map.Shard("s1").Primary.String(); p != "10.0.0.1:5432" {
		t.Errorf("after --force the primary of s1 is %s", p)
	}

	r = runCtl(t, nil, "map", "apply", "--help").want(t, exitOK)
	ctlWantContains(t, "help", r.stdout, "--force", "RISKS SPLIT BRAIN", "needs no epoch line", "exit 4")
}

// A map file without an epoch line is applied (the meta cluster assigns
// the epoch), and map diff reads it too.
func TestMapApplyWithoutEpoch(t *testing.T) {
	c := startCtlMeta(t, ctlMapYAML, ctlTokenOpts)
	noEpoch := strings.TrimPrefix(ctlChangedMapYAML, "epoch: 1\n")
	if strings.Contains(noEpoch, "epoch") {
		t.Fatal("the test map still has an epoch")
	}
	file := ctlWriteFile(t, "noepoch.yaml", noEpoch)
	c.cli(t, "map", "diff", "-f", file).want(t, exitError) // they differ
	r := c.cli(t, "map", "apply", "-f", file).want(t, exitOK)
	ctlWantContains(t, "stdout", r.stdout, "as epoch 2 (was 1)")
	if cur := c.store.Map(); cur.Epoch != 2 || cur.Map.Shard("s3") == nil {
		t.Fatalf("after apply: epoch %d, %v", cur.Epoch, cur.Map)
	}
}
