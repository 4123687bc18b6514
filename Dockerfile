# syntax=docker/dockerfile:1
# cache-refresher: a multi-stage build onto a pinned Node 20 slim base. Every stage uses the same tag so
# the native-free dependency tree built here is exactly what runs.

# ---- build: dev dependencies, TypeScript compile, then drop dev dependencies --------------------------
FROM node:20.19.5-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

# ---- runtime ----------------------------------------------------------------------------------------
FROM node:20.19.5-bookworm-slim AS runtime
ENV NODE_ENV=production \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=9464 \
    DLQ_SPOOL_DIR=/app/data/dlq
WORKDIR /app
COPY --from=build --chown=node:node /app/package.json ./package.json
COPY --from=build --chown=node:node /app/node_modules ./node_modules
COPY --from=build --chown=node:node /app/dist ./dist
# The DLQ spool must survive restarts: a volume owned by the unprivileged user.
RUN mkdir -p /app/data/dlq && chown -R node:node /app/data
VOLUME ["/app/data/dlq"]
USER node
EXPOSE 9464
# slim images carry no curl: probe /healthz with node's own fetch.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.HTTP_PORT||9464)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# The sidecar drains in-flight runs on SIGTERM (SHUTDOWN_GRACE_SEC); give it that long before a kill.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["run"]
