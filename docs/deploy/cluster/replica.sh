#!/usr/bin/env bash
# Entrypoint of a streaming replica (services s0-replica, s1-replica), for
# the official postgres image and the local one alike: on an empty $PGDATA
# it waits for PRIMARY (host:port), copies it with pg_basebackup -R (which
# writes primary_conninfo and standby.signal), then runs postgres.
set -euo pipefail
if [ "$(id -u)" = 0 ]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chown postgres:postgres "$PGDATA" /var/run/postgresql
	chmod 700 "$PGDATA"
	exec setpriv --reuid=postgres --regid=postgres --init-groups bash "${BASH_SOURCE[0]}" "$@"
fi
host="${PRIMARY%:*}" port="${PRIMARY##*:}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	export PGPASSWORD="$POSTGRES_PASSWORD"
	until pg_isready -q -h "$host" -p "$port" -U postgres; do sleep 0.5; done
	until pg_basebackup -h "$host" -p "$port" -U postgres -D "$PGDATA" -R -X stream -c fast; do
		rm -rf "${PGDATA:?}"/*
		sleep 1
	done
	unset PGPASSWORD
fi
exec postgres "$@"
