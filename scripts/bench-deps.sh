#!/usr/bin/env bash
# Installs what the benchmarks (bench/) need beyond the test suite: wrk, the
# HTTP load generator, from Debian's packages. The tests never need it.
set -euo pipefail

command -v wrk >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "bench-deps: wrk is missing; install it (apt-get install wrk) and rerun" >&2
    exit 1
fi
echo "bench-deps: installing wrk" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends wrk >/dev/null
