# One image for every seatwatch service: `seatwatch ingest|transform|alert|simulator`.
#
# Build stage: librdkafka and OpenSSL are compiled from source by the Rust build, so the
# runtime image needs no Kafka or TLS libraries of its own.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin seatwatch \
 && strip target/release/seatwatch

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin seatwatch
COPY --from=build /src/target/release/seatwatch /usr/local/bin/seatwatch
USER 10001:10001
ENV SEATWATCH_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/seatwatch"]
CMD ["--help"]
