#!/usr/bin/env bash
# Prepares a Debian bookworm machine with no image registry for `npm run test:docker` (test/docker/stack.docker.test.ts):
#   1. Docker Engine from Debian (`docker.io`), started in the background when no daemon answers;
#   2. Compose v2 (and buildx) from Debian trixie's `docker-compose`/`docker-buildx` packages (bookworm's compose is
#      1.29, which rejects docker-compose.cpu.yml's `!reset`), put in ~/.docker/cli-plugins/;
#   3. stand-in base images, since `node:…` and `redis:…` cannot be pulled here:
#        blip3o-standin/debian:bookworm  debootstrap --variant=minbase bookworm, trimmed, `docker import`ed
#        blip3o-standin/node:20          + this machine's `node` and `npm`, and a `node` user (uid 1000) as in node:*-slim
#        blip3o-standin/redis:7          + Debian's redis-server, running as the `redis` user with /data and an entrypoint as
#                                        in redis:* (protected mode off)
#   4. removes what an interrupted test run left behind (its compose projects and images are named blip3o-dockertest-*,
#      blip3o-test-*).
# Idempotent: every step is skipped when its result is already there. Needs root.
set -euo pipefail

log() { printf '[docker-setup] %s\n' "$*" >&2; }

apt_install() {
  # other users of this machine may hold the dpkg lock: wait for it
  for _ in $(seq 1 60); do
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/tmp/docker-setup-apt.log 2>&1; then return 0; fi
    sleep 5
  done
  cat /tmp/docker-setup-apt.log >&2
  return 1
}

# ---- 1. Docker Engine ----------------------------------------------------------------------------------------
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  log 'installing docker.io and debootstrap'
  apt_install docker.io debootstrap
fi
if ! docker info >/dev/null 2>&1; then
  log 'starting dockerd (log: /var/log/dockerd.log)'
  setsid nohup dockerd >/var/log/dockerd.log 2>&1 </dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 /var/log/dockerd.log >&2; exit 1; }
fi

# ---- 2. Compose v2 and buildx from trixie -----------------------------------------------------------------------
plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
if ! docker compose version >/dev/null 2>&1 || ! docker buildx version >/dev/null 2>&1; then
  log 'installing the Compose v2 and buildx CLI plugins from Debian trixie'
  if [ ! -f /etc/apt/sources.list.d/trixie.sources ]; then
    # low priority: nothing from trixie is installed unless asked for by name, as below
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      >/etc/apt/sources.list.d/trixie.sources
    printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' >/etc/apt/preferences.d/trixie-low
  fi
  for _ in $(seq 1 30); do apt-get update -qq >/dev/null 2>&1 && break; sleep 5; done
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q docker-compose/trixie docker-buildx/trixie >/dev/null)
  mkdir -p "$plugins"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done
  install -m 0755 "$tmp/x/usr/libexec/docker/cli-plugins/docker-compose" "$plugins/docker-compose"
  install -m 0755 "$tmp/x/usr/libexec/docker/cli-plugins/docker-buildx" "$plugins/docker-buildx"
  rm -rf "$tmp"
fi
docker compose version >&2

# ---- 3. stand-in base images ------------------------------------------------------------------------------------
if ! docker image inspect blip3o-standin/debian:bookworm >/dev/null 2>&1; then
  log 'debootstrap --variant=minbase bookworm (a few minutes)'
  root=$(mktemp -d /var/tmp/standin-rootfs.XXXXXX)
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/tmp/docker-setup-debootstrap.log 2>&1 \
    || { tail -20 /tmp/docker-setup-debootstrap.log >&2; exit 1; }
  # trimmed like the official slim images: no apt lists, docs, man pages or locales
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
  find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
  tar -C "$root" -c . | docker import --change 'CMD ["bash"]' - blip3o-standin/debian:bookworm >/dev/null
  rm -rf "$root"
fi

if ! docker image inspect blip3o-standin/node:20 >/dev/null 2>&1; then
  log "blip3o-standin/node:20 from this machine's node $(node --version)"
  ctx=$(mktemp -d)
  cp "$(readlink -f "$(command -v node)")" "$ctx/node"
  npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  cp -a "$npm_dir" "$ctx/npm"
  cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM blip3o-standin/debian:bookworm
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && groupadd --gid 1000 node \
 && useradd --uid 1000 --gid node --shell /bin/bash --create-home node
CMD ["node"]
DOCKERFILE
  DOCKER_BUILDKIT=0 docker build -q -t blip3o-standin/node:20 "$ctx" >/dev/null
  rm -rf "$ctx"
fi

# (an older stand-in without the entrypoint is replaced)
if [ "$(docker image inspect -f '{{join .Config.Entrypoint " "}}' blip3o-standin/redis:7 2>/dev/null)" != docker-entrypoint.sh ]; then
  log "blip3o-standin/redis:7 (Debian's redis-server)"
  ctx=$(mktemp -d)
  # As the official images' entrypoint: arguments starting with "-" or a *.conf are redis-server's; and protected mode
  # off, which they build in (a container's Redis is reached over the compose network: a replica, the sentinels).
  cat >"$ctx/docker-entrypoint.sh" <<'ENTRYPOINT'
#!/bin/sh
case "$1" in -*|*.conf) set -- redis-server "$@" ;; esac
if [ "$1" = redis-server ]; then shift; exec redis-server "$@" --protected-mode no; fi
exec "$@"
ENTRYPOINT
  chmod 755 "$ctx/docker-entrypoint.sh"
  cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM blip3o-standin/debian:bookworm
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER redis
WORKDIR /data
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
DOCKERFILE
  DOCKER_BUILDKIT=0 docker build -q -t blip3o-standin/redis:7 "$ctx" >/dev/null
  rm -rf "$ctx"
fi

# ---- 4. leftovers of an interrupted run (a killed test process cannot clean up after itself) ----------------------
for project in $(docker ps -a --filter label=com.docker.compose.project --format '{{.Label "com.docker.compose.project"}}' | { grep '^blip3o-dockertest-' || true; } | sort -u); do
  log "removing the leftovers of an interrupted run: $project"
  docker ps -aq --filter "label=com.docker.compose.project=$project" | xargs -r docker rm -f >/dev/null
  docker volume ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker volume rm >/dev/null
  docker network ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker network rm >/dev/null
done
docker image ls --format '{{.Repository}}:{{.Tag}}' 'blip3o-test-*' | { grep -v ':dev$' || true; } | xargs -r docker image rm -f >/dev/null

docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' 'blip3o-standin/*' >&2
