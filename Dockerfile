# Build: docker build -t diststore .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
COPY --from=build /src/target/release/diststore /usr/local/bin/diststore
# Inside a container the API must listen on every interface; require a token for it
# (DISTSTORE_API_TOKEN) or set DISTSTORE_OPEN_API=1 behind another guard.
ENV DISTSTORE_LISTEN=0.0.0.0:8080 DISTSTORE_S3_LISTEN=0.0.0.0:3900 DISTSTORE_DATA_DIR=/data
VOLUME /data
EXPOSE 8080 3900
# `diststore health` exits 0 when the node's /health is ok (DISTSTORE_NODE defaults to
# http://127.0.0.1:8080; /health needs no token).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s CMD ["diststore", "health", "--quiet"]
ENTRYPOINT ["diststore"]
