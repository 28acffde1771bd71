#!/bin/sh
# /docker-entrypoint-initdb.d script of a shard's primary: lets the
# replicas (and the meta cluster's repointing) connect for replication
# with the postgres password.
set -eu
printf '\nhost replication all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
