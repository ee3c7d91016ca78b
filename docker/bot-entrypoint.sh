#!/bin/sh
# Starts one platform's bot, but only when its secrets are set: `docker compose up` then runs exactly the bots
# the operator configured in .env. A bot without tokens logs why and exits 0; its restart policy (on-failure)
# leaves it stopped instead of crash-looping. (Chosen over compose profiles so that filling in .env is the only
# step: no --profile flags to remember.)
set -eu
platform="${1:-}"
case "$platform" in
  discord)
    missing=""
    [ -n "${DISCORD_TOKEN:-}" ] || missing="$missing DISCORD_TOKEN"
    [ -n "${DISCORD_APPLICATION_ID:-}" ] || missing="$missing DISCORD_APPLICATION_ID"
    ;;
  slack)
    missing=""
    [ -n "${SLACK_BOT_TOKEN:-}" ] || missing="$missing SLACK_BOT_TOKEN"
    # Socket Mode needs the app-level token; HTTP mode needs the signing secret instead.
    [ -n "${SLACK_APP_TOKEN:-}${SLACK_SIGNING_SECRET:-}" ] || missing="$missing SLACK_APP_TOKEN(or SLACK_SIGNING_SECRET)"
    ;;
  *)
    echo "usage: bot-entrypoint.sh discord|slack" >&2
    exit 64
    ;;
esac
if [ -n "$missing" ]; then
  echo "{\"level\":\"info\",\"component\":\"bot-entrypoint\",\"msg\":\"$platform bot not started: set$missing in .env to enable it\"}"
  exit 0
fi
# Only this platform's adapter: docker/config/<platform>.yaml switches the other one off.
export BLIP3O_CONFIG="${BLIP3O_CONFIG:-docker/config/$platform.yaml}"
exec node --import "${TSX_LOADER:-tsx}" bots/main.ts
