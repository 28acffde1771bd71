#!/usr/bin/env bash
# Builds, with podman and without any image registry, the images the
# sharded compose cluster (docs/deploy/docker-compose.yml) runs here:
#
#   localhost/debian:bookworm   debootstrap (minbase) of Debian 12, imported
#   localhost/postgres:15       Debian's postgresql-15 with an entrypoint that
#                               behaves like the official image's for what the
#                               compose file uses (POSTGRES_PASSWORD, initdb,
#                               /docker-entrypoint-initdb.d, listen on '*',
#                               PGPORT, replication from any host)
#   localhost/pgshard:dev       bin/pgshard built on this host (cgo, glibc)
#                               copied onto the Debian base
#
# Usage: local-images.sh [base|pgshard|all]   (default all)
#   base     the Debian and PostgreSQL images, only when missing
#   pgshard  go build ./cmd/pgshard on the host, then the pgshard image
# Set FORCE=1 to rebuild the base images. Users with a registry do not need
# this: the compose file defaults to the official postgres image and builds
# pgshard from the top-level Dockerfile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

what="${1:-all}"
rootfs="${ROOTFS_DIR:-/var/tmp/pgshard-debian-rootfs}"

have_image() { podman image exists "$1"; }

build_base() {
	if [ "${FORCE:-0}" = 1 ] || ! have_image localhost/debian:bookworm; then
		echo "==> localhost/debian:bookworm (debootstrap)"
		local mirror
		mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
		mirror="${mirror:-http://deb.debian.org/debian}"
		rm -rf "$rootfs"
		debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
		tar -C "$rootfs" -c . | podman import - localhost/debian:bookworm >/dev/null
		rm -rf "$rootfs"
	fi
	if [ "${FORCE:-0}" = 1 ] || ! have_image localhost/postgres:15; then
		echo "==> localhost/postgres:15"
		podman build --network host -t localhost/postgres:15 -f docs/deploy/local/postgres.Containerfile docs/deploy/local
	fi
}

build_pgshard() {
	echo "==> bin/pgshard (go build, cgo) and localhost/pgshard:dev"
	CGO_ENABLED=1 go build -trimpath -o bin/pgshard ./cmd/pgshard
	# The context is the binary alone (the top-level .dockerignore leaves
	# bin/ out, and a small context builds faster).
	local ctx
	ctx=$(mktemp -d)
	cp bin/pgshard "$ctx/pgshard"
	local old
	old=$(podman image inspect --format '{{.Id}}' localhost/pgshard:dev 2>/dev/null || true)
	podman build --network host -t localhost/pgshard:dev -f docs/deploy/local/pgshard.Containerfile "$ctx"
	rm -rf "$ctx"
	# The previous build, now untagged, is not kept.
	if [ -n "$old" ] && [ "$old" != "$(podman image inspect --format '{{.Id}}' localhost/pgshard:dev)" ]; then
		podman rmi "$old" >/dev/null 2>&1 || true
	fi
}

case "$what" in
base) build_base ;;
pgshard) build_pgshard ;;
all) build_base; build_pgshard ;;
*) echo "usage: $0 [base|pgshard|all]" >&2; exit 2 ;;
esac
