# rekey: one image for every role (scheduler, worker, api); the command picks the role.
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
# tsx runs the TypeScript sources directly, so the runtime dependencies are all there is to install.
RUN npm ci --omit=dev --no-audit --no-fund
COPY bin ./bin
COPY src ./src
COPY workers ./workers
COPY tsconfig.json ./
# Policies are mounted at /app/policies (see docker-compose.yml).
USER node
ENTRYPOINT ["node", "bin/rekey.js"]
CMD ["--help"]
