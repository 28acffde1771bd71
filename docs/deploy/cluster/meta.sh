#!/bin/sh
# Runs one member of the meta cluster (services meta1..meta3): META_ID,
# META_RAFT (Raft address, as the other members reach it), META_API (gRPC
# API), META_METRICS (/metrics, HTTPS), META_BOOTSTRAP=1 on the first
# member only. The others join through the init service.
set -eu
until [ -s /certs/meta.pem ]; do sleep 0.2; done
set -- --id "$META_ID" --raft-addr "$META_RAFT" --api-addr "$META_API" \
	--metrics-listen "$META_METRICS" --data-dir /var/lib/pgshard/meta \
	--tls-cert /certs/meta.pem --tls-key /certs/meta-key.pem \
	--pg-sslmode disable --failover-after "${FAILOVER_AFTER:-2s}"
if [ "${META_BOOTSTRAP:-0}" = 1 ]; then
	set -- "$@" --bootstrap
fi
exec pgshard meta run "$@"
