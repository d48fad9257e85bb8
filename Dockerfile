# syntax=docker/dockerfile:1
# rekey: one image for every role (scheduler, worker, api); the command picks the role.
#
#   docker build -t rekey .
#   docker run --read-only rekey worker
#
# Three stages: build compiles TypeScript to dist/; deps installs the production dependencies
# only; the final stage holds those two and nothing else (no TypeScript, no tsx, no esbuild).
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY workers ./workers
# `rekey demo` imports its fakes from test/ at run time; the compiler follows those imports, so
# they are here to compile. They are not copied into the final image.
COPY test/fakes ./test/fakes
COPY test/helpers ./test/helpers
RUN npx tsc -p tsconfig.build.json

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# No install scripts: the build is done, and the native msgpackr add-on ships prebuilt.
# TypeScript comes along only as valibot's optional peer (bull-board's dependency, for its types):
# nothing runs it, so it goes.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
  && rm -rf node_modules/typescript node_modules/.bin/tsc node_modules/.bin/tsserver \
  && npm cache clean --force

FROM ${NODE_IMAGE}
ENV NODE_ENV=production \
    REKEY_POLICY_DIR=/app/policies \
    REKEY_API_HOST=0.0.0.0 \
    REKEY_HEALTH_HOST=0.0.0.0 \
    REKEY_HEALTH_PORT=9090
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY --from=build /src/dist/workers ./dist/workers
COPY package.json policy.schema.json ./
COPY bin ./bin
# Policies are mounted at /app/policies (docker-compose.yml, deploy/kubernetes). Nothing is
# written to the filesystem at run time, so the root filesystem can be read-only.
# The image's `node` user, by number so Kubernetes can check runAsNonRoot.
USER 1000:1000
# 8080: the API (rekey api, rekey run). 9090: /healthz, /readyz and /metrics of every role.
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9090/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Node's flags: src/node-flags.ts says why (a young generation sized to rekey's small heap).
ENTRYPOINT ["node", "--max-semi-space-size=16", "bin/rekey.js"]
CMD ["--help"]
