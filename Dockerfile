# outbox-relay: runs the bundled command line (dist/bundle/main.js, scripts/build-bundle.sh), not
# the TypeScript sources. The bundle holds only the code the relay reaches: against the image
# that ran the sources, idle RSS ~103 instead of ~175 MB, /readyz after ~0.7 instead of ~2.1 s,
# and 247 instead of 332 MB of image (README, Performance). The runtime stage keeps the bundle,
# the patched kafkajs (the bundle's one external package) and package.json ("type": "module").
#
#   docker build -t outbox-relay .
#   docker run --rm -e DATABASE_URL=... outbox-relay migrate
#   docker run --rm -e DATABASE_URL=... -e KAFKA_BROKERS=... -p 8080:8080 outbox-relay      (= run)
#   docker run --rm -e DATABASE_URL=... outbox-relay dlq list
#
# Pin NODE_IMAGE by digest in production builds (node:22-bookworm-slim@sha256:...). Where no
# image registry is reachable, pass a local Node 22 base instead (scripts/container-smoke.sh
# makes one). No `# syntax=` line on purpose: BuildKit would pull that frontend from a
# registry, and its built-in frontend already understands everything used here.
ARG NODE_IMAGE=node:22-bookworm-slim

# --- build: all dependencies, then the bundle --------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# Effect 4 needs Node >= 22.19. Fail the build, not the first start, when the base image (the
# runtime stage's too) is older.
RUN node -e 'const [a, b] = process.versions.node.split(".").map(Number); if (a < 22 || (a === 22 && b < 19)) { console.error(`Node >= 22.19 required, the base image has ${process.version}`); process.exit(1) }'
COPY package.json package-lock.json .npmrc ./
# All dependencies: the bundler, rolldown, comes with the dev dependencies (vitest's vite). No
# dependency has an install script, so none is run; our own postinstall (the kafkajs patch, see
# scripts/patch-kafkajs.mjs) is run explicitly. The npm cache mount spares the downloads.
COPY scripts/patch-kafkajs.mjs ./scripts/
RUN --mount=type=cache,target=/root/.npm \
    npm ci --ignore-scripts --no-audit --no-fund \
 && node scripts/patch-kafkajs.mjs
# Bundles src/cli/main.ts into dist/bundle/ and runs its --help once. A change to the sources
# rebuilds from here on (a few seconds); the install above stays cached until the lockfile changes.
COPY scripts/build-bundle.sh ./scripts/
COPY src ./src
RUN bash scripts/build-bundle.sh

# --- runtime ----------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    HTTP_PORT=8080
WORKDIR /app
# Root-owned and read-only for the service user: the process cannot rewrite its own code.
# kafkajs (no dependencies of its own) is the only package the bundle imports at run time; the
# tracing modules are chunks of the bundle, loaded only when an OTLP endpoint is set.
COPY --from=build /app/node_modules/kafkajs ./node_modules/kafkajs
COPY --from=build /app/dist/bundle ./dist/bundle
COPY package.json ./
# The node image's unprivileged user (uid 1000).
USER node
EXPOSE 8080
# /healthz answers while the relay loop is alive. Slim images have no curl: node's fetch does it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.HTTP_PORT}/healthz`, { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Exec form: node is PID 1 and receives SIGTERM itself (graceful stop: finish or release the
# in-flight batch within SHUTDOWN_GRACE_MS, then exit 0). Give `docker stop` more than that.
STOPSIGNAL SIGTERM
# A young generation of 8 MB semi-spaces instead of V8's 16: ~20 MB less peak RSS at full speed
# for no measurable CPU (bench variants, bench/results/2026-12-03T08-1*-drain-heap-variants.json).
# Caps on the old generation reach 130-160 MB but cost 26-50 % more CPU, so none is set.
ENTRYPOINT ["node", "--max-semi-space-size=8", "dist/bundle/main.js"]
CMD ["run"]
