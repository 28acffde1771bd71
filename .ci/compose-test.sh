#!/usr/bin/env bash
# make compose-test: brings up the sharded compose cluster of
# docs/deploy/docker-compose.yml with podman (every service on the host's
# network on its own 127.0.0.1 port: compose-host.yml, compose-host.env),
# checks it through both proxies, and removes it, leaving nothing running.
#
# podman-compose 1.0.3 (Debian 12) cannot run services with
# network_mode: host (it adds the project's bridge network as well), so
# .ci/compose-run.py drives plain podman commands from the same compose
# files, health checks and depends_on conditions included.
#
# Checks: psql writes through each proxy land on the shard the map names
# (read back on each shard's primary directly); pgbench (4 clients, inserts
# and point reads of random users) through each proxy with no failed
# transaction, its rows on the right side of the split on each primary;
# reads through each proxy are answered by the shard's replica
# (pg_is_in_recovery, inet_server_port); `pgshard failover --shard s0` from
# the CLI container promotes s0's replica and writes through both proxies
# then land on it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

t0=$SECONDS
project=pgshardct
files=(-f docs/deploy/docker-compose.yml -f docs/deploy/compose-host.yml)
compose() { /usr/bin/python3 .ci/compose-run.py -p "$project" "${files[@]}" "$@"; }
step() { echo "==> [+$((SECONDS - t0))s] $*"; }
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

export PATH="/usr/local/go/bin:$PATH"
step "set-up (podman, runc, debootstrap, containers.conf, base images)"
bash .ci/compose-setup.sh
# PGSHARD_IMAGE / PG_IMAGE, when set, name images to test instead (e.g.
# one built from the top-level Dockerfile).
if [ -z "${PGSHARD_IMAGE:-}" ]; then
	step "pgshard image from the host's build"
	bash docs/deploy/local-images.sh pgshard >/dev/null
fi

set -a
# shellcheck source=../docs/deploy/compose-host.env
. docs/deploy/compose-host.env
set +a
export PG_IMAGE="${PG_IMAGE:-localhost/postgres:15}" PGSHARD_IMAGE="${PGSHARD_IMAGE:-localhost/pgshard:dev}"

teardown() {
	local status=$?
	if [ "$status" -ne 0 ]; then
		compose logs || true
	fi
	step "down"
	compose down
	left="$(podman ps -a -q --filter "label=io.pgshard.compose.project=$project")$(podman volume ls -q --filter "label=io.pgshard.compose.project=$project")"
	left+="$(podman pod ls -q --filter "name=$project")$(podman network ls -q --filter "name=$project")"
	if [ -n "$left" ]; then
		echo "FAIL: left behind: $left" >&2
		status=1
	fi
	step "finished with status $status"
	exit "$status"
}
compose down # leftovers of an interrupted run
trap teardown EXIT

step "up (waits for every health check)"
up_start=$SECONDS
compose --timeout 240 up
step "cluster up in $((SECONDS - up_start))s"

SPLIT_ID="${SPLIT_ID:-1000000}" # as in docker-compose.yml
p1="host=127.0.0.1 port=${PROXY1_LISTEN##*:} user=app dbname=postgres"
p2="host=127.0.0.1 port=${PROXY2_LISTEN##*:} user=app dbname=postgres"
direct() { PGPASSWORD=postgres psql -X -qAt -v ON_ERROR_STOP=1 "host=127.0.0.1 port=${1##*:} user=postgres dbname=postgres" -c "$2"; }
via() { PGPASSWORD=app psql -X -qAt -v ON_ERROR_STOP=1 "$1" -c "$2"; }
# until_eq WHAT WANT CMD...: poll CMD until it prints WANT (30 s).
until_eq() {
	local what=$1 want=$2 got=""
	shift 2
	local end=$((SECONDS + 30))
	while [ $SECONDS -lt $end ]; do
		got=$("$@" 2>&1) && [ "$got" = "$want" ] && return 0
		sleep 0.2
	done
	fail "$what: want '$want', got '$got'"
}

step "psql through both proxies: rows land on their shards"
via "$p1" "INSERT INTO users (id, name, email) VALUES (1, 'psql', 'a@x'), (1500000, 'psql', 'b@x')" >/dev/null
via "$p2" "INSERT INTO users (id, name, email) VALUES (2, 'psql', 'c@x'), (1500001, 'psql', 'd@x')" >/dev/null
got=$(direct "$S0_PRIMARY" "SELECT string_agg(id::text, ',' ORDER BY id) FROM users WHERE name = 'psql'")
[ "$got" = "1,2" ] || fail "s0 primary has psql rows '$got', want 1,2"
got=$(direct "$S1_PRIMARY" "SELECT string_agg(id::text, ',' ORDER BY id) FROM users WHERE name = 'psql'")
[ "$got" = "1500000,1500001" ] || fail "s1 primary has psql rows '$got', want 1500000,1500001"
got=$(via "$p2" "SELECT count(*) FROM users WHERE name = 'psql'")
[ "$got" = 4 ] || fail "count through proxy2 (both shards, merged): $got, want 4"

step "reads through both proxies reach the replicas"
for p in "$p1" "$p2"; do
	until_eq "read of id 1 via $p" "t|${S0_REPLICA##*:}" via "$p" "SELECT pg_is_in_recovery(), inet_server_port() FROM users WHERE id = 1"
	until_eq "read of id 1500000 via $p" "t|${S1_REPLICA##*:}" via "$p" "SELECT pg_is_in_recovery(), inet_server_port() FROM users WHERE id = 1500000"
done

step "pgbench through both proxies"
script=$(mktemp)
cat >"$script" <<'SQL'
\set id random(10, 1999999)
INSERT INTO users (id, name, email) VALUES (:id, 'pgbench', 'bench@x') ON CONFLICT (id) DO NOTHING;
SELECT name FROM users WHERE id = :id;
SQL
for port in "${PROXY1_LISTEN##*:}" "${PROXY2_LISTEN##*:}"; do
	out=$(PGPASSWORD=app pgbench -n -h 127.0.0.1 -p "$port" -U app -c 4 -j 2 -t 100 -f "$script" postgres 2>&1) ||
		{ echo "$out"; rm -f "$script"; fail "pgbench through 127.0.0.1:$port"; }
	echo "$out" | grep -E 'transactions actually processed|failed|^tps' || true
	grep -q 'number of transactions actually processed: 400/400' <<<"$out" || { rm -f "$script"; fail "pgbench through 127.0.0.1:$port did not process 400/400"; }
done
rm -f "$script"
got=$(direct "$S0_PRIMARY" "SELECT count(*) > 0 AND max(id) < $SPLIT_ID FROM users WHERE name = 'pgbench'")
[ "$got" = t ] || fail "s0 primary: pgbench rows missing or above the split"
got=$(direct "$S1_PRIMARY" "SELECT count(*) > 0 AND min(id) >= $SPLIT_ID FROM users WHERE name = 'pgbench'")
[ "$got" = t ] || fail "s1 primary: pgbench rows missing or below the split"
echo "pgbench rows: s0 $(direct "$S0_PRIMARY" "SELECT count(*) FROM users WHERE name = 'pgbench'"), s1 $(direct "$S1_PRIMARY" "SELECT count(*) FROM users WHERE name = 'pgbench'")"

step "pgshard failover --shard s0 from the CLI container"
out=$(compose exec cli pgshard failover --shard s0 --tls-ca /certs/ca.pem) || fail "failover: $out"
echo "$out"
grep -q "the primary is now $S0_REPLICA" <<<"$out" || fail "failover did not promote $S0_REPLICA"
[ "$(direct "$S0_REPLICA" "SELECT pg_is_in_recovery()")" = f ] || fail "$S0_REPLICA still in recovery"
until_eq "write via proxy1 after failover" "${S0_REPLICA##*:}" via "$p1" "INSERT INTO users (id, name, email) VALUES (3, 'after', 'e@x') ON CONFLICT (id) DO UPDATE SET name = 'after' RETURNING inet_server_port()"
until_eq "write via proxy2 after failover" "${S0_REPLICA##*:}" via "$p2" "INSERT INTO users (id, name, email) VALUES (4, 'after', 'f@x') ON CONFLICT (id) DO UPDATE SET name = 'after' RETURNING inet_server_port()"
got=$(direct "$S0_REPLICA" "SELECT string_agg(id::text, ',' ORDER BY id) FROM users WHERE id <= 4")
[ "$got" = "1,2,3,4" ] || fail "new s0 primary has ids '$got', want 1,2,3,4"

step "all checks passed"
