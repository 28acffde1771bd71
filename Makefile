# pgshard — build, test, benchmark.
GO        ?= go
export PATH := $(shell $(GO) env GOROOT)/bin:$(shell $(GO) env GOPATH)/bin:$(PATH)
STATICCHECK_VERSION ?= v0.8.2
BIN       := bin/pgshard

.PHONY: bench-ab bench-cache bench-clients bench-2pc bench-failover bench-reshard test-timing build compose-test test unit integration lint vet staticcheck fmt-check bench bench-sharded demo fuzz difffuzz clean proto

build:
	$(GO) build -o $(BIN) ./cmd/pgshard

# The README's test command: static checks, unit and integration tests
# (race detector on), against real PostgreSQL servers the tests start.
test: lint
	$(GO) test -race -count=1 -timeout 20m ./...

lint: fmt-check vet staticcheck

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	@command -v staticcheck >/dev/null 2>&1 || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	staticcheck ./...

# Short fuzzing session for every fuzz target (seed corpora run in `make test`),
# then the differential fuzzer's long run: DIFFFUZZ_STATEMENTS generated
# SELECTs from seed DIFFFUZZ_SEED on, each through pgshard over 4 shards
# (range and hash maps) and on a plain server (`make test` runs it for a minute
# over 2 and 4 shards).
DIFFFUZZ_STATEMENTS ?= 100000
DIFFFUZZ_SEED ?= 1
fuzz:
	$(GO) test ./wire/ -run '^$$' -fuzz FuzzReadStartup -fuzztime 30s
	$(GO) test ./wire/ -run '^$$' -fuzz FuzzFrameReader -fuzztime 30s
	for f in FuzzDecodeParse FuzzDecodeBind FuzzDecodeDescribe FuzzDecodeExecute FuzzDecodeClose; do \
		$(GO) test ./wire/ -run '^$$' -fuzz "^$$f$$" -fuzztime 30s || exit 1; done
	$(GO) test ./wire/auth/ -run '^$$' -fuzz FuzzParseSCRAMVerifier -fuzztime 30s
	$(GO) test ./wire/auth/ -run '^$$' -fuzz FuzzAuthenticate -fuzztime 30s
	$(GO) test ./router/sqllex/ -run '^$$' -fuzz FuzzSkip -fuzztime 30s
	$(GO) test ./replication/pgadmin/ -run '^$$' -fuzz FuzzConninfoRoundTrip -fuzztime 30s
	$(GO) test ./router/ -run '^$$' -fuzz FuzzClassify -fuzztime 30s
	$(GO) test ./router/plan/ -run '^$$' -fuzz FuzzRoute -fuzztime 30s
	$(GO) test ./router/copysplit/ -run '^$$' -fuzz FuzzSplit -fuzztime 30s
	$(GO) test ./router/merge/ -run '^$$' -fuzz FuzzDecodeValue -fuzztime 30s
	$(GO) test ./shardmap/ -run '^$$' -fuzz FuzzParseYAML -fuzztime 30s
	$(MAKE) difffuzz

# The differential fuzzer alone (see above); its report ends with the
# refusals by reason.
difffuzz:
	PGSHARD_DIFFFUZZ_STATEMENTS=$(DIFFFUZZ_STATEMENTS) PGSHARD_DIFFFUZZ_SEED=$(DIFFFUZZ_SEED) PGSHARD_DIFFFUZZ_SHARDS=4 \
		$(GO) test ./integration/difffuzz/ -run '^TestDiffFuzz$$' -count=1 -v -timeout 3h

# pgbench through pgshard vs direct vs PgBouncer; writes docs/benchmarks.md.
bench: build
	$(GO) run ./integration/bench -pgshard $(BIN) -out docs/benchmarks.md -rounds 3 -sharded=false -merged -targets direct,pgshard,pgshard-1core,pgbouncer

# Before/after: the same rounds also run a pgshard built from git revision
# BASE (default: the commit before HEAD) as target pgshard-baseline; the
# report gets a "pgshard vs baseline" table of CPU µs/tx and TPS ratios.
BASE ?= HEAD~1
bench-ab: build
	@d="$$(mktemp -d)" && git archive "$(BASE)" | tar -x -C "$$d" && \
		(cd "$$d" && $(GO) build -o "$(CURDIR)/bin/pgshard-base" ./cmd/pgshard); rc=$$?; rm -rf "$$d"; exit $$rc
	$(GO) run ./integration/bench -pgshard $(BIN) -baseline bin/pgshard-base -out docs/benchmarks.md -rounds 3 -sharded=false

# Idle clients: RSS per idle client of pgshard and PgBouncer at
# IDLE_CLIENTS connections (spread over load-generator processes of at most
# 5,000 clients), pgbench through the same proxy beside the largest count;
# rewrites its own section of docs/benchmarks.md. IDLE_BASE=<git revision>
# also runs a pgshard built from that revision (before/after).
IDLE_CLIENTS ?= 1000,15000
IDLE_BASE ?=
bench-clients: build
	@if [ -n "$(IDLE_BASE)" ]; then d="$$(mktemp -d)" && git archive "$(IDLE_BASE)" | tar -x -C "$$d" && \
		(cd "$$d" && $(GO) build -o "$(CURDIR)/bin/pgshard-base" ./cmd/pgshard); rc=$$?; rm -rf "$$d"; exit $$rc; fi
	$(GO) run ./integration/bench -pgshard $(BIN) $(if $(IDLE_BASE),-baseline bin/pgshard-base) -idle-only -idle-clients $(IDLE_CLIENTS) -out docs/benchmarks.md

# Sharded pgbench (accounts by aid): pgshard over 4 shards vs 1 shard vs
# direct; rewrites its own section of docs/benchmarks.md.
bench-sharded: build
	$(GO) run ./integration/bench -pgshard $(BIN) -sharded-only -rounds 3 -duration 10s -out docs/benchmarks.md

# Hot-row cache: Zipfian point reads (pgbench) through pgshard processes
# with the cache on (cold, warm) vs off vs straight to PostgreSQL, and a
# 90/10 mix for the staleness; prints the docs/benchmarks.md section
# (USERS, DURATION, CLIENTS to change). CACHE_BASE=rev also runs a pgshard
# built from that revision with the cache on, alternating with this one
# (ROUNDS warm runs each, default 3); CACHE_PROFILE=file saves a CPU
# profile of the proxy during its first warm run.
USERS ?= 1000000
DURATION ?= 10s
CLIENTS ?= 16
CACHE_BASE ?=
CACHE_PROFILE ?=
ROUNDS ?=
bench-cache: build
	@if [ -n "$(CACHE_BASE)" ]; then d="$$(mktemp -d)" && git archive "$(CACHE_BASE)" | tar -x -C "$$d" && \
		(cd "$$d" && $(GO) build -o "$(CURDIR)/bin/pgshard-cachebase" ./cmd/pgshard); rc=$$?; rm -rf "$$d"; exit $$rc; fi
	PGSHARD_CACHEBENCH=1 PGSHARD_CACHEBENCH_BIN=$(CURDIR)/$(BIN) PGSHARD_CACHEBENCH_USERS=$(USERS) PGSHARD_CACHEBENCH_DURATION=$(DURATION) \
		PGSHARD_CACHEBENCH_CLIENTS=$(CLIENTS) PGSHARD_CACHEBENCH_ROUNDS=$(ROUNDS) PGSHARD_CACHEBENCH_PROFILE=$(CACHE_PROFILE) \
		PGSHARD_CACHEBENCH_BASELINE=$(if $(CACHE_BASE),$(CURDIR)/bin/pgshard-cachebase) \
		$(GO) test ./integration/cachebench/ -run '^TestCacheBench$$' -count=1 -v -timeout 30m

# Transactions over several shards: a transfer between accounts on two
# shards (two-phase commit) vs on one shard, through the same pgshard proxy
# process in the same run (TPC_CLIENTS clients, TPC_ROUNDS rounds of
# TPC_DURATION per kind; fsync and synchronous_commit on), then the recovery
# time of an in-doubt transaction (proxy killed -9 after PREPARE,
# TPC_RECOVERIES times); prints the docs/benchmarks.md tables.
TPC_CLIENTS ?= 8
TPC_DURATION ?= 10s
TPC_ROUNDS ?= 2
TPC_RECOVERIES ?= 3
bench-2pc:
	PGSHARD_BENCH_2PC=1 PGSHARD_BENCH_2PC_CLIENTS=$(TPC_CLIENTS) PGSHARD_BENCH_2PC_DURATION=$(TPC_DURATION) \
		PGSHARD_BENCH_2PC_ROUNDS=$(TPC_ROUNDS) PGSHARD_BENCH_2PC_RECOVERIES=$(TPC_RECOVERIES) \
		$(GO) test ./integration/banktest/ -run '^TestBench2PC$$' -count=1 -v -timeout 10m

# Online resharding: a plain COPY | COPY of an interval of ROWS rows next
# to the initial copy of `reshard move` between the same two servers (rows/s,
# MB/s, ratio), the catch-up after it, and CUTOVERS cutovers and rollbacks of
# a small interval under writers through two proxies (the pause inside and
# outside the interval, statements held); prints the docs/benchmarks.md section.
ROWS ?= 1000000
CUTOVERS ?= 5
# The resharding tests' gap bounds as the issue states them (1 s inside a
# moving interval, 200 ms outside), for an idle machine; make test checks
# them ten times looser (see integration/ledger).
test-timing:
	PGSHARD_STRICT_TIMING=1 $(GO) test -count=1 -v -run 'TestReshardUnderLoad|TestReshardHashTwoToThree|TestReshardDeadProxyDelaysCutover' ./integration/metacluster/

bench-reshard:
	PGSHARD_RESHARDBENCH=1 PGSHARD_RESHARDBENCH_ROWS=$(ROWS) PGSHARD_RESHARDBENCH_CUTOVERS=$(CUTOVERS) \
		$(GO) test ./integration/reshardbench/ -run '^TestReshardBench$$' -count=1 -v -timeout 30m

# Failover timing: kill -9 of a primary under load (asynchronous and
# synchronous replication), a planned switchover, a silent partition of a
# primary (iptables; needs root) and restarts after a failover, RUNS times;
# prints the measurements recorded in docs/benchmarks.md.
RUNS ?= 5
bench-failover:
	$(GO) test -count=$(RUNS) -v -run 'TestFailover(Async|Sync)$$|TestPartitionedPrimary$$|TestRestartsAfterFailover$$' ./integration/failovertest/ 2>&1 | \
		grep -E 'killed; new map|switchover of|acknowledged writes missing|partition of|new sessions writing|^    (failover|partition|restart)_test.go:[0-9]+: load:|^(ok|FAIL|--- )'

# The sharded compose cluster (docs/deploy/docker-compose.yml) with podman:
# up, psql and pgbench through both proxies, reads on replicas, a failover
# from the CLI container, down (nothing left running). Needs root (installs
# podman, runc, debootstrap when missing; builds local base images).
compose-test:
	bash .ci/compose-test.sh

# Local demo cluster with the proxy on 127.0.0.1:6432 (Ctrl-C stops it).
demo: build
	./$(BIN) demo

# Regenerates the meta API's Go code from shardmap/metapb/meta.proto. The
# generated files are committed; CI never runs protoc. Made with protoc
# 3.21.12 (Debian: apt-get install -y protobuf-compiler), protoc-gen-go
# v1.36.12 (go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12)
# and protoc-gen-go-grpc v1.5.1
# (go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1).
proto:
	protoc -I shardmap/metapb \
		--go_out=shardmap/metapb --go_opt=paths=source_relative \
		--go-grpc_out=shardmap/metapb --go-grpc_opt=paths=source_relative \
		shardmap/metapb/meta.proto

clean:
	rm -rf bin
