# syntax=docker/dockerfile:1
# Build stage: the release binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p downwatch \
 && cp target/release/downwatch /usr/local/bin/downwatch

# Runtime stage: the binary, CA certificates and curl for the health check.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data downwatch \
 && mkdir -p /data && chown downwatch /data
COPY --from=build /usr/local/bin/downwatch /usr/local/bin/downwatch
USER downwatch
WORKDIR /data
ENV DOWNWATCH_BIND=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["downwatch"]
CMD ["serve"]
