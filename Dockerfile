# syntax=docker/dockerfile:1
# Build: docker build -t atgate .
# Run:   docker run -p 8080:8080 -v $PWD/config:/etc/atgate atgate run --config /etc/atgate/atgate.yaml

FROM rust:1.95-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake clang && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that source edits reuse the cached layer.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && for b in $(grep -A1 '^\[\[bench\]\]' Cargo.toml | sed -n 's/^name = "\(.*\)"/\1/p'); do echo 'fn main() {}' > "benches/$b.rs"; done \
    && cargo build --release --locked || true
COPY . .
RUN touch src/main.rs src/lib.rs && cargo build --release --locked && strip target/release/atgate

# distroless/cc has glibc and CA certificates, no shell, and runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/atgate /usr/local/bin/atgate
COPY --from=build /src/config/atgate.yaml /etc/atgate/atgate.yaml
USER nonroot:nonroot
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/atgate"]
CMD ["run", "--config", "/etc/atgate/atgate.yaml"]
