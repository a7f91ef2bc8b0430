#!/bin/sh
# Install Debian's poppler-utils (pdfinfo, pdftoppm, pdftotext) and zbar-tools (zbarimg) for the printable
# notices' tests: render a notice's pages to images, decode its QR codes, read its text back.
# Idempotent: does nothing when the four tools and Pango are there. Needs root (or sudo) and apt.
set -eu

missing=""
{ command -v pdfinfo && command -v pdftoppm && command -v pdftotext; } >/dev/null 2>&1 || missing="$missing poppler-utils"
command -v zbarimg >/dev/null 2>&1 || missing="$missing zbar-tools"
# WeasyPrint (the notices' PDF renderer, from PyPI) lays text out with Pango.
ldconfig -p | grep -q 'libpangoft2-1.0.so.0' || missing="$missing libpango-1.0-0 libpangoft2-1.0-0"

if [ -z "$missing" ]; then
    echo "pdf tools: already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086 # the package names are meant to split
$SUDO apt-get install -y -q --no-install-recommends $missing

for tool in pdfinfo pdftoppm pdftotext zbarimg; do
    command -v "$tool" >/dev/null 2>&1 || { echo "pdf tools: $tool is still missing" >&2; exit 1; }
done
echo "pdf tools: installed$missing"
