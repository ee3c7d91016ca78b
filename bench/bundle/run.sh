#!/bin/sh
# The offline GPU benchmark: no Node, no network. `./run.sh` = random BLIP3-o-4B weights → convert → run on the
# provider `auto` picks; `./run.sh --preset tiny` for a quick check; other flags as for `npm run bench -- gpu`.
# Needs an x86-64 Linux host with glibc ≥ 2.28, libstdc++, and a GPU driver with a Vulkan ICD (Mesa, NVIDIA).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then XDG_RUNTIME_DIR=$(mktemp -d); export XDG_RUNTIME_DIR; fi
exec "$here/bin/node" "$here/app/bench.mjs" "$@"
