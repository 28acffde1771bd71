# pgshard image, built from source in two stages (cgo: the SQL parser,
# pg_query_go, is C). Build: docker build -t pgshard .
# docs/deploy/docker-compose.yml builds it for the sharded cluster; where no
# registry is reachable, docs/deploy/local-images.sh builds the same image
# from a binary built on the host (docs/deploy/local/pgshard.Containerfile).
ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build -trimpath -ldflags="-s -w" -o /out/pgshard ./cmd/pgshard

FROM ${BASE_IMAGE}
# openssl: the compose cluster's certs service makes the meta API's
# certificates with it.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates openssl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 pgshard \
    && mkdir -p /var/lib/pgshard && chown pgshard: /var/lib/pgshard
COPY --from=build /out/pgshard /usr/local/bin/pgshard
USER pgshard
# 6432 clients, 9930 admin HTTP (metrics, health), 6440 meta API, 6441 Raft
EXPOSE 6432 9930 6440 6441
ENTRYPOINT ["pgshard"]
CMD ["proxy", "--config", "/etc/pgshard/pgshard.yaml"]
