#!/bin/sh
# The init service: waits for the meta cluster's first member, joins the
# other two (idempotent), and applies the shard map (users range-sharded by
# id at SPLIT_ID, orders colocated by user_id) unless the cluster already
# has one. Addresses come from the environment (see docker-compose.yml).
set -eu
until [ -s /certs/ca.pem ] && [ -s /certs/meta.pem ]; do sleep 0.2; done
tls="--tls-ca /certs/ca.pem"
retry() { # retry CMD...: until it succeeds, at most 3 minutes
	n=0
	until "$@"; do
		n=$((n + 1))
		if [ "$n" -ge 360 ]; then
			echo "init: giving up on: $*" >&2
			return 1
		fi
		sleep 0.5
	done
}
# shellcheck disable=SC2086
retry pgshard meta status --meta "$META1_API" $tls --timeout 2s >/dev/null 2>&1
# shellcheck disable=SC2086
retry pgshard meta join m2 "$META2_RAFT" --api-addr "$META2_API" --meta "$META1_API" $tls
# shellcheck disable=SC2086
retry pgshard meta join m3 "$META3_RAFT" --api-addr "$META3_API" --meta "$META1_API" $tls
# shellcheck disable=SC2086
if pgshard map show -o json $tls 2>/dev/null | grep -q '"epoch": [1-9]'; then
	echo "init: the meta cluster has a shard map already; not applying one"
	exit 0
fi
cat >/tmp/shardmap.yaml <<MAP
shards:
  - {name: s0, primary: "$S0_PRIMARY", replicas: ["$S0_REPLICA"]}
  - {name: s1, primary: "$S1_PRIMARY", replicas: ["$S1_REPLICA"]}
distributions:
  - name: users
    key_type: bigint
    strategy: range
    default_shard: s0
    intervals:
      - {lo: -inf, hi: $SPLIT_ID, shard: s0}
      - {lo: $SPLIT_ID, hi: +inf, shard: s1}
tables:
  - {name: public.users, distribution: users, key: id}
  - {name: public.orders, distribution: users, key: user_id}
MAP
# shellcheck disable=SC2086
retry pgshard map apply -f /tmp/shardmap.yaml --comment "compose cluster start" $tls
echo "init: meta cluster of 3 members, shard map applied"
