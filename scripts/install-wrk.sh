#!/bin/sh
# Install Debian's wrk (HTTP load generator) for benchmarks/public.py. Idempotent: does nothing when wrk is
# on the PATH. Needs root (or sudo) and apt.
set -eu

if command -v wrk >/dev/null 2>&1; then
    echo "wrk: already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends wrk

command -v wrk >/dev/null 2>&1 || { echo "wrk: installation finished but wrk is still missing" >&2; exit 1; }
echo "wrk: installed $(wrk --version 2>&1 | head -n 1 || true)"
