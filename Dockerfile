# pgshard proxy image. Build: docker build -t pgshard .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build -trimpath -ldflags="-s -w" -o /out/pgshard ./cmd/pgshard

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 pgshard
COPY --from=build /out/pgshard /usr/local/bin/pgshard
USER pgshard
EXPOSE 6432 9930
ENTRYPOINT ["pgshard"]
CMD ["proxy", "--config", "/etc/pgshard/pgshard.yaml"]
