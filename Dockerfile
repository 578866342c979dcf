# syntax=docker/dockerfile:1
#
# One small image with the `gatehouse` binary, for every role (README:
# "Running with Docker"; docker-compose.yml runs it). Build it with
#   docker build -t gatehouse:local .
#
# The build stage compiles the binary exactly as the README says
# (`cargo build --release --locked -p gatehouse`), with cargo's registry and
# the target directory in BuildKit cache mounts, so a rebuild after a code
# change recompiles only the workspace's crates.
#
# The runtime stage is distroless (glibc, libgcc_s, CA certificates; no
# shell, no package manager) and runs as the unprivileged `nonroot` user
# (65532). The binary needs nothing else: it links only libc, libm and
# libgcc_s dynamically; TLS (aws-lc-rs) and SQLite are compiled in. Both
# stages are Debian 12, so the glibc the binary was built against is the one
# it runs on. The health check is the binary itself (`gatehouse healthcheck`:
# GET /ready on $PORT), since there is no curl or shell to run one.

# The workspace's rust-version.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# .dockerignore lets only the workspace's manifests and crates/ in: never
# target/, data/, .env or secrets/.
COPY . .
RUN --mount=type=cache,id=gatehouse-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=gatehouse-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=gatehouse-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p gatehouse \
    && install -D -m 0755 target/release/gatehouse /out/usr/local/bin/gatehouse \
    && install -d -m 0700 /out/state/gatehouse /out/state/gatehouse/keys

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/usr/local/bin/gatehouse /usr/local/bin/gatehouse
# DATA_DIR (/var/lib/gatehouse) and its keys/ (KEYS_DIR), mode 0700 and
# owned by the runtime user, so that a volume mounted on either (the
# signing-key ring, or the SQLite file of a development run) starts out
# writable by it and by nobody else. (Copying the parent's contents makes
# `gatehouse/` itself one of the copied, chowned entries.)
COPY --from=build --chown=65532:65532 /out/state/ /var/lib/
ENV DATA_DIR=/var/lib/gatehouse
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/gatehouse", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["gateway"]
