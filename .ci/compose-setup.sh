#!/usr/bin/env bash
# One-time, idempotent set-up for running containers with podman on a
# Debian 12 machine without an image registry (`make compose-test` calls
# it): installs podman, runc, debootstrap and python3-yaml (for
# .ci/compose-run.py, which stands in for podman-compose) when missing,
# writes a containers.conf that works in this kind of sandbox, and builds
# the local base images (docs/deploy/local-images.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for p in podman runc debootstrap; do
	command -v "$p" >/dev/null 2>&1 || missing+=("$p")
done
/usr/bin/python3 -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
if [ "${#missing[@]}" -gt 0 ]; then
	echo "==> installing ${missing[*]} (apt-get)"
	export DEBIAN_FRONTEND=noninteractive
	as_root apt-get update -q
	as_root apt-get install -y -q "${missing[@]}"
fi

# The sandbox forbids raising RLIMIT_NOFILE/NPROC (default_ulimits), and
# crun refuses hybrid cgroups while runc works. $CONTAINERS_CONF, when
# set, names the file to write instead of the system one.
conf="${CONTAINERS_CONF:-/etc/containers/containers.conf}"
want='[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"'
if [ ! -f "$conf" ] || ! grep -q '^runtime = "runc"' "$conf"; then
	if [ -f "$conf" ]; then
		echo "==> $conf exists without runtime = \"runc\"; keeping it (set CONTAINERS_CONF to use another file)" >&2
	else
		echo "==> writing $conf"
		as_root mkdir -p "$(dirname "$conf")"
		printf '%s\n' "$want" | as_root tee "$conf" >/dev/null
	fi
fi

bash docs/deploy/local-images.sh base
