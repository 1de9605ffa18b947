# syntax=docker/dockerfile:1
# mailferry in a container; docs/install.md ("Docker") shows how to run it.
#
#   docker build -t mailferry .
#
# The runtime image holds the binary (the plugins are inside it), the CA
# roots and curl for the health check, and runs as the unprivileged user
# mailferry (uid 10001). The configuration is mounted at /etc/mailferry,
# state lives in /var/lib/mailferry.

FROM rust:1.95-slim-trixie AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
# build.rs builds the plugins for wasm32-wasip2 and embeds them. The caches
# only speed up rebuilds; the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 755 target/release/mailferry /usr/local/bin/mailferry

FROM debian:trixie-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid, so a host folder mounted at /etc/mailferry can be given to it.
RUN groupadd --system --gid 10001 mailferry \
    && useradd --system --uid 10001 --gid mailferry --home-dir /var/lib/mailferry \
       --shell /usr/sbin/nologin mailferry \
    && install -d -o mailferry -g mailferry -m 0700 /var/lib/mailferry \
    && install -d -o mailferry -g mailferry -m 0755 /etc/mailferry
COPY --from=build /usr/local/bin/mailferry /usr/local/bin/mailferry
USER mailferry
VOLUME ["/etc/mailferry", "/var/lib/mailferry"]
# Docker lets a container's processes bind ports below 1024 on its own
# network (net.ipv4.ip_unprivileged_port_start=0), so no capability is needed.
EXPOSE 587 465
# Graceful: no new connections, open transactions finish within
# shutdown_grace_secs (30 by default); run with --stop-timeout 60.
STOPSIGNAL SIGTERM
# The admin listener `mailferry init` configures ([admin] address); /healthz
# answers 503 while the server drains.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD curl -fsS http://127.0.0.1:2580/healthz || exit 1
ENTRYPOINT ["mailferry"]
CMD ["serve", "--config", "/etc/mailferry/mailferry.toml"]
