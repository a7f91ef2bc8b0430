#!/bin/sh
# Install Debian's Chromium for the console's browser tests (Playwright drives it by its path; no browser
# is downloaded). Idempotent: does nothing when /usr/bin/chromium is there. Needs root (or sudo) and apt.
set -eu

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "chromium: already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium

[ -x "$CHROMIUM" ] || { echo "chromium: installation finished but $CHROMIUM is still missing" >&2; exit 1; }
echo "chromium: installed $("$CHROMIUM" --version 2>/dev/null | head -n 1 || true)"
