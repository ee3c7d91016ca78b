#!/bin/bash
# Container healthcheck: `docker/healthcheck.sh <port> <path>` exits 0 on an HTTP 2xx answer from 127.0.0.1.
# bash's /dev/tcp instead of curl (not in the images) or node (measured in `npm run test:docker` on a loaded host:
# `node healthcheck.mjs` took ~7 s and timed out every check, this takes milliseconds).
port="${1:-9100}"
path="${2:-/healthz}"
exec 3<>"/dev/tcp/127.0.0.1/${port}" 2>/dev/null || exit 1
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
IFS=' ' read -r -t 4 _version status _rest <&3 || exit 1
case "$status" in
  2??) exit 0 ;;
  *) exit 1 ;;
esac
