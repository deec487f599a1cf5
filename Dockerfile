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
ENTRYPOINT ["diststore"]
