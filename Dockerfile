# syntax=docker/dockerfile:1
# ringrelay in a container: a release build on Debian 12 (bookworm), run from debian:bookworm-slim
# as an unprivileged user. Not built in CI (CI has no Docker daemon); see docs/operations.md,
# "Containers".
#
#   docker build -t ringrelay .
#   docker run --rm -p 8080:8080 --stop-timeout 30 ringrelay
#
# Configuration: RINGRELAY_* variables (docs/configuration.md), or a file mounted at
# /etc/ringrelay/ringrelay.toml (the image ships the commented example there; the variables
# below override it). Docker's default seccomp profile refuses io_uring on current Docker, so
# the relay logs that it runs on the epoll driver; allow io_uring_setup, io_uring_enter and
# io_uring_register in a custom profile for io_uring.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target/ are BuildKit caches, so a rebuild after a source change compiles
# the crate alone; the binary is copied out because a cache mount is gone after the step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ringrelay \
    && cp target/release/ringrelay /usr/local/bin/ringrelay \
    && mkdir -p /out/man \
    && /usr/local/bin/ringrelay man --out-dir /out/man

FROM debian:bookworm-slim
# ca-certificates: the roots a wss:// or https:// client of the relay (agent, load, bridge to
# an HTTPS target, rediss://) checks certificates against.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ringrelay \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin ringrelay
COPY --from=build /usr/local/bin/ringrelay /usr/bin/ringrelay
COPY --from=build /out/man/ /usr/share/man/man1/
COPY systemd/ringrelay.toml /etc/ringrelay/ringrelay.toml
# A container is reached from outside it, so the public listener takes every address. The
# admin listener (/metrics, /stats, /health) stays on the container's loopback: to scrape it
# from outside, set RINGRELAY_ADMIN_LISTEN=0.0.0.0:9090 and publish 9090 to a private network
# only (docs/operations.md).
ENV RINGRELAY_CONFIG=/etc/ringrelay/ringrelay.toml \
    RINGRELAY_LISTEN=0.0.0.0:8080 \
    RINGRELAY_LOG_FORMAT=json
USER 10001:10001
EXPOSE 8080
# SIGTERM drains: WebSockets get 1001 and the relay waits up to shutdown_grace (10 s) before it
# exits, so give `docker stop` more than that (--stop-timeout 30, or stop_grace_period: 30s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/ringrelay"]
CMD ["serve"]
