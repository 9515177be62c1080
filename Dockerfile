# pgshift as a container (used by docker-compose.yml).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin pgshift

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/pgshift /usr/local/bin/pgshift
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["pgshift"]
CMD ["serve", "--addr", "0.0.0.0:8080"]
