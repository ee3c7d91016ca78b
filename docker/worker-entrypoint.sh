#!/bin/sh
# The worker: fetches and converts the model on first start (model.hubId, model.convertOnStart), then serves jobs.
set -eu
exec node --import "${TSX_LOADER:-tsx}" worker/main.ts "$@"
