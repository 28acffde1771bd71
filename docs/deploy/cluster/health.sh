#!/bin/sh
# Health checks of the compose services: health.sh meta | proxy.
set -eu
case "$1" in
meta)
	exec pgshard meta status --meta "$META_API" --tls-ca /certs/ca.pem --timeout 2s >/dev/null
	;;
proxy)
	# The proxy's /readyz (200 once it accepts clients) on its admin port.
	port="${PROXY_ADMIN_LISTEN##*:}"
	exec bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "GET /readyz HTTP/1.0\r\n\r\n" >&3 && head -n1 <&3 | grep -q " 200 "' _ "$port"
	;;
*)
	echo "usage: health.sh meta|proxy" >&2
	exit 2
	;;
esac
