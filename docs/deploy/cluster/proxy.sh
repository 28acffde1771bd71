#!/bin/sh
# Runs a proxy that follows the meta cluster's shard map (services proxy1,
# proxy2): PROXY_ID, PROXY_LISTEN, PROXY_ADMIN_LISTEN. User app, password
# app; the proxy reaches PostgreSQL as postgres with PGSHARD_BACKEND_PASSWORD.
set -eu
until [ -s /certs/ca.pem ] && [ -s /certs/meta.pem ]; do sleep 0.2; done
# A proxy following meta starts from the cluster's map: wait for it.
until pgshard map show -o json --tls-ca /certs/ca.pem --timeout 2s 2>/dev/null | grep -q '"epoch": [1-9]'; do
	sleep 0.5
done
cat >/tmp/pgshard.yaml <<CFG
listen: $PROXY_LISTEN
admin_listen: $PROXY_ADMIN_LISTEN
pool_mode: transaction
users:
  # printf 'app\n' | pgshard passwd app
  - name: app
    password: "SCRAM-SHA-256\$4096:C7QZ/0YSvMj4dF294yh5rw==\$GtLAcl1Dm9UKm1ZlUTWxIUks4kOGHC3WknhEUON9/2U=:ZSaq+sGUr1uSRbug9Hd7P3mxi434VS5cU1L7pxVN0PM="
# No shards: a proxy following meta routes by the meta cluster's map only.
backend:
  user: postgres
  sslmode: disable
pool:
  size: 10
CFG
exec pgshard proxy --config /tmp/pgshard.yaml --meta "$PGSHARD_META" \
	--meta-tls-ca /certs/ca.pem --proxy-id "$PROXY_ID" --log-level "${LOG_LEVEL:-info}"
