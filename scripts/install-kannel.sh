#!/bin/sh
# Install Kannel (bearerbox, smsbox) and kannel-extras (fakesmsc) for the SMS integration tests.
# Idempotent: does nothing when both are already there. Needs root (or sudo) and Debian/Ubuntu apt.
set -eu

FAKESMSC=/usr/lib/kannel/test/fakesmsc

have_kannel() {
    { command -v bearerbox >/dev/null 2>&1 || [ -x /usr/sbin/bearerbox ]; } && [ -x "$FAKESMSC" ]
}

if have_kannel; then
    echo "kannel: bearerbox and fakesmsc already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends kannel kannel-extras

# The Debian package ships an init script; the tests start their own boxes, so keep the service off.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet kannel 2>/dev/null; then
    $SUDO systemctl stop kannel || true
fi

have_kannel || { echo "kannel: installation finished but bearerbox/fakesmsc are still missing" >&2; exit 1; }
echo "kannel: installed $(bearerbox --version 2>&1 | head -n 1 || true)"
