#!/usr/bin/env bash
# Installs what the benchmarks (bench/) need beyond the test suite, from
# Debian's packages: wrk, the HTTP load generator, and nginx-light, the
# compiled reverse proxy bench/gateway.py measures beside the gateway. The
# tests never need them.
set -euo pipefail

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "bench-deps: ${missing[*]} missing; install (apt-get install ${missing[*]}) and rerun" >&2
    exit 1
fi
echo "bench-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d 101: the package must not start a system nginx on port 80.
policy=/usr/sbin/policy-rc.d
created=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
fi
trap '[ "$created" -eq 1 ] && rm -f "$policy"' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
