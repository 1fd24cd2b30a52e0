#!/usr/bin/env bash
# Installs the system packages the test suite drives for real: PostgreSQL
# (the postgres state backend), Chromium (the playground's browser test),
# rsync (SkyPilot's file mounts) and curl (the streaming example's test).
set -euo pipefail

have_postgres() {
    command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
have_chromium() {
    command -v chromium >/dev/null 2>&1
}
have() {
    command -v "$1" >/dev/null 2>&1
}

missing=()
have_postgres || missing+=(postgresql)
have_chromium || missing+=(chromium)
have rsync || missing+=(rsync)  # SkyPilot syncs file mounts with it, even in a dry run
have curl || missing+=(curl)  # the streaming example's test calls it as the README does
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: missing ${missing[*]}; install them (apt-get install ${missing[*]}) and rerun" >&2
    exit 1
fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
