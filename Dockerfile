# syntax=docker/dockerfile:1
# Builds static (musl) ferrolb-controller and ferrolb-speaker and ships them alone in a scratch
# image: no shell, no libc, nothing to patch but ferrolb itself.
#   docker build -t ferrolb:dev .
ARG RUST_VERSION=1.89

FROM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH=amd64
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN case "$TARGETARCH" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH $TARGETARCH" >&2; exit 1 ;; \
    esac > /rust-target \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target "$(cat /rust-target)" \
      -p ferrolb-controller -p ferrolb-speaker \
 && mkdir /out \
 && cp "target/$(cat /rust-target)/release/ferrolb-controller" \
       "target/$(cat /rust-target)/release/ferrolb-speaker" /out/

FROM scratch
LABEL org.opencontainers.image.title="ferrolb" \
      org.opencontainers.image.description="Bare-metal LoadBalancer for Kubernetes, MetalLB L2 compatible" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ferrolb-controller /out/ferrolb-speaker /
# The controller runs as this user; the speaker's DaemonSet overrides it with root + NET_RAW.
USER 65534:65534
ENTRYPOINT ["/ferrolb-controller"]
