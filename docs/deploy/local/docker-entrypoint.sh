#!/usr/bin/env bash
# A small stand-in for the official postgres image's entrypoint, covering
# what docs/deploy/docker-compose.yml relies on: as root it drops to the
# postgres user; on an empty $PGDATA it runs initdb with POSTGRES_USER /
# POSTGRES_PASSWORD, allows password logins from any host
# (POSTGRES_HOST_AUTH_METHOD, default scram-sha-256), listens on '*', runs
# /docker-entrypoint-initdb.d/*.sql and *.sh against a server that listens
# only on its Unix socket, then execs the command (postgres, on $PGPORT).
set -Eeuo pipefail

if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chown postgres:postgres "$PGDATA" /var/run/postgresql
	chmod 700 "$PGDATA"
	exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "${POSTGRES_PASSWORD:-}" ]; then
		echo "error: database is uninitialized and POSTGRES_PASSWORD is not set" >&2
		exit 1
	fi
	user="${POSTGRES_USER:-postgres}"
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of flags
	initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") ${POSTGRES_INITDB_ARGS:-}
	printf '\nhost all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"
	printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
	pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
	export PGUSER="$user" PGPASSWORD="$POSTGRES_PASSWORD"
	db="${POSTGRES_DB:-$user}"
	if [ "$db" != postgres ]; then
		psql -v ON_ERROR_STOP=1 --dbname postgres -c "CREATE DATABASE \"$db\""
	fi
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
		*.sh)
			echo "running $f"
			if [ -x "$f" ]; then "$f"; else . "$f"; fi
			;;
		*.sql)
			echo "running $f"
			psql -v ON_ERROR_STOP=1 --dbname "$db" -f "$f"
			;;
		esac
	done
	unset PGPASSWORD
	pg_ctl -D "$PGDATA" -m fast -w stop
	echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
