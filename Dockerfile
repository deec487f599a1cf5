# Build: docker build -t diststore .
# Run:   see docker-compose.yml (three nodes), or
#        docker run -e DISTSTORE_API_TOKEN=$(openssl rand -hex 32) -p 8080:8080 -v diststore:/data diststore
FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, built against stub sources: this layer is reused until Cargo.toml,
# Cargo.lock or .cargo/ change, so a change to the code rebuilds only the crate itself.
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
RUN mkdir -p src migrations/fixtures \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > migrations/fixtures/make_v1.rs \
    && cargo build --release --locked \
    && rm -rf src migrations target/release/.fingerprint/diststore-* \
        target/release/deps/diststore-* target/release/deps/libdiststore-*
COPY . .
# The stubs' fingerprints are gone, so cargo rebuilds the crate from the real sources even
# where their timestamps are older than the stub build.
RUN cargo build --release --locked --bin diststore

FROM debian:bookworm-slim
# The node runs as an unprivileged user that owns only its data directory. The volume is
# created from the image's /data, so a new volume starts owned by that user.
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin diststore \
    && mkdir -p /data && chown diststore:diststore /data && chmod 0700 /data
COPY --from=build /src/target/release/diststore /usr/local/bin/diststore
# Inside a container the API must listen on every interface; require a token for it
# (DISTSTORE_API_TOKEN) or set DISTSTORE_OPEN_API=1 behind another guard. Logs go to
# stdout as readable lines; DISTSTORE_LOG_FORMAT=json for a log pipeline.
ENV DISTSTORE_LISTEN=0.0.0.0:8080 DISTSTORE_S3_LISTEN=0.0.0.0:3900 DISTSTORE_DATA_DIR=/data
USER diststore
VOLUME /data
EXPOSE 8080 3900
# `diststore health` exits 0 when the node's /health is ok (DISTSTORE_NODE defaults to
# http://127.0.0.1:8080; /health needs no token). The image has no curl.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s CMD ["diststore", "health", "--quiet"]
ENTRYPOINT ["diststore"]
