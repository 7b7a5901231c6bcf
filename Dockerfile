# syntax=docker/dockerfile:1
# Orderly: multi-stage build, release binary on a slim Debian runtime.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Build the dependency graph first so source edits reuse this layer. The
# workspace's other member (the Rust client) needs its manifest and a stub.
COPY Cargo.toml Cargo.lock ./
COPY clients/rust/Cargo.toml ./clients/rust/Cargo.toml
RUN mkdir -p src clients/rust/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs clients/rust/src/lib.rs \
 && cargo build --release --locked -p orderly \
 && rm -rf src
COPY src ./src
# /docs and /console serve these from the binary (include_bytes!).
COPY assets ./assets
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked -p orderly --bin orderly \
 && strip target/release/orderly

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin orderly
WORKDIR /app
COPY --from=build /src/target/release/orderly /usr/local/bin/orderly
COPY config ./config
ENV ORDERLY_ENV=production \
    ORDERLY_CONFIG_DIR=/app/config \
    ORDERLY__SERVER__HOST=0.0.0.0 \
    ORDERLY__SERVER__PORT=8080 \
    RUST_LOG=info
USER orderly
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/orderly"]
