# syntax=docker/dockerfile:1
# One image for both flowgraph services of docker-compose.yml: `flowgraph run` (the pipeline)
# and `flowgraph agent` (the eBPF node agent).
# See docs/KAFKA.md, "Docker Compose and the JSON Schemas".
#
#   docker build -t flowgraph:local .
#   docker build -t flowgraph:local --build-arg VMLINUX_H=vmlinux.h .   # BTF-less build host
#
# vmlinux.h: the agent's kernel programs are compiled against the kernel's type definitions,
# which sources-ebpf/build.rs dumps with bpftool from /sys/kernel/btf/vmlinux. A build
# container sees the build host's /sys read-only, and BTF is not namespaced, so on a Linux
# build host whose kernel has BTF (CONFIG_DEBUG_INFO_BTF=y, the default of current distro
# kernels) the build needs nothing more. CO-RE relocates every field access against the
# running kernel's BTF when the agent loads, so the image also runs on other kernels (the
# programs need tp_btf, Linux 5.5+). A build host without BTF (some remote or sandboxed
# builders) gets a vmlinux.h dumped on any BTF kernel
#   (bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h)
# placed in the build context and named with --build-arg VMLINUX_H=PATH (relative to the repo
# root; vmlinux.h at the root is git-ignored). Committing one instead was rejected: 2.8 MB of
# generated text, stale with every kernel.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
# clang -target bpf, llvm-strip, libbpf's headers and bpftool build the kernel programs;
# zlib's and OpenSSL's headers build the vendored librdkafka. The rust image already has gcc,
# make and perl.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang llvm libbpf-dev bpftool zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ARG VMLINUX_H=
# The cache mounts keep the registry and target/ between builds (BuildKit); the binary is
# copied out of the cached target/ so that the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    set -eu; \
    if [ -n "${VMLINUX_H}" ]; then \
      [ -f "/src/${VMLINUX_H}" ] || { echo "error: VMLINUX_H=${VMLINUX_H} is not in the build context" >&2; exit 1; }; \
      export FLOWGRAPH_VMLINUX_H="/src/${VMLINUX_H}"; \
    elif [ ! -r /sys/kernel/btf/vmlinux ]; then \
      echo "error: this build host exposes no /sys/kernel/btf/vmlinux to dump vmlinux.h from." >&2; \
      echo "  Dump one on a kernel with BTF: bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h" >&2; \
      echo "  then: docker build --build-arg VMLINUX_H=vmlinux.h ." >&2; \
      exit 1; \
    fi; \
    cargo build --release --locked --bin flowgraph; \
    install -m 0755 target/release/flowgraph /usr/local/bin/flowgraph

FROM ${RUNTIME_IMAGE}
# The binary links libc, libm, libgcc_s and libz, all in the slim base, and libssl3 (librdkafka's
# TLS and SASL/SCRAM), which is not.
COPY --from=builder /usr/local/bin/flowgraph /usr/local/bin/flowgraph
COPY config/examples/flowgraph.toml /etc/flowgraph/flowgraph.toml
# The pipeline runs unprivileged; the agent (eBPF) overrides the user with root.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 flowgraph \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin flowgraph \
 && flowgraph --version
USER 10001:10001
ENTRYPOINT ["flowgraph"]
CMD ["run", "--config", "/etc/flowgraph/flowgraph.toml"]
