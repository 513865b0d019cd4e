# syntax=docker/dockerfile:1
#
# The wgsub images, built from one multi-stage Dockerfile:
#
#   --target wgsub       wgsub-operator, wgsub-api and wgsub-bot on distroless (glibc, no shell),
#                        running as the non-root user 65532. The chart picks the binary by `command`.
#   --target node-agent  wgsub-node-agent on Debian slim with wireguard-go (the userspace backend),
#                        amneziawg-go (AmneziaWG servers; built from its upstream source at the
#                        pinned AMNEZIAWG_GO_VERSION tag), ip and nft. It runs as root: it needs
#                        CAP_NET_ADMIN in the host's network namespace, which Kubernetes only makes
#                        effective for uid 0; the chart drops every other capability and keeps the
#                        root filesystem read-only.
#
# Build (from the repository root):
#   docker build --target wgsub      -t REGISTRY/wgsub:0.1.0 .
#   docker build --target node-agent -t REGISTRY/wgsub-node-agent:0.1.0 .

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm
ARG GO_VERSION=1.24
ARG AMNEZIAWG_GO_VERSION=v0.2.16

# ---- build: all four binaries in one cargo invocation (one dependency build) ----
FROM docker.io/library/rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
ARG RUST_VERSION
# The commit the binaries report in their build_info metric (the release workflow passes it).
ARG WGSUB_GIT_COMMIT=""
# Use the image's toolchain (the same version rust-toolchain.toml pins) without the lint
# components the file asks for.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
WORKDIR /src
COPY . .
# Migrations (migrations/) and the Mini App's files are embedded into the binaries at compile time.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p wgsub-operator -p wgsub-api -p wgsub-bot -p wgsub-node-agent \
 && mkdir -p /out \
 && cp target/release/wgsub-operator target/release/wgsub-api target/release/wgsub-bot \
       target/release/wgsub-node-agent /out/

# ---- amneziawg-go: AmneziaWG's userspace implementation, from upstream source at a pinned tag ----
# Go modules are checked against the go.sum of that tag; a static binary (no cgo).
FROM docker.io/library/golang:${GO_VERSION}-${DEBIAN_RELEASE} AS amneziawg-go
ARG AMNEZIAWG_GO_VERSION
WORKDIR /src/amneziawg-go
RUN git clone --depth 1 --branch "${AMNEZIAWG_GO_VERSION}" \
        https://github.com/amnezia-vpn/amneziawg-go.git . \
 && go mod download \
 && go mod verify \
 && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/amneziawg-go . \
 && /out/amneziawg-go --version

# ---- operator, api and bot ----
FROM gcr.io/distroless/cc-debian12:nonroot AS wgsub
COPY --from=build /out/wgsub-operator /out/wgsub-api /out/wgsub-bot /usr/local/bin/
USER 65532:65532
# The chart sets the command; without one the image prints the API's usage.
ENTRYPOINT ["/usr/local/bin/wgsub-api"]
CMD ["--help"]

# ---- node-agent: wireguard-go for the userspace backend, amneziawg-go for AmneziaWG servers, ip,
# nft (iptables where nft is missing) ----
FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim AS node-agent
RUN apt-get update \
 && apt-get install -y --no-install-recommends wireguard-go wireguard-tools iproute2 nftables iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=amneziawg-go /out/amneziawg-go /usr/local/bin/
COPY --from=build /out/wgsub-node-agent /usr/local/bin/
USER 0:0
ENTRYPOINT ["/usr/local/bin/wgsub-node-agent"]
