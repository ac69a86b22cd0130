#!/usr/bin/env bash
# Prints the path of a promtool (Prometheus' config, rules and metrics checker) for the tests,
# fetching one when none is installed, so that `npm test` runs the promtool checks on a fresh
# Debian or Ubuntu machine too:
#   $PROMTOOL; else promtool on PATH; else the copy cached in ~/.cache/outbox-relay/promtool;
#   else the binary of Debian's `prometheus` package, fetched with `apt-get download` (no root
#   needed, nothing installed system-wide) and cached there.
# Exits 1 with the reason on stderr when none can be had.
#
# Env: PROMTOOL, OUTBOX_RELAY_CACHE (cache root, default ~/.cache/outbox-relay).
set -euo pipefail

CACHE=${OUTBOX_RELAY_CACHE:-$HOME/.cache/outbox-relay}/promtool
readonly CACHE
fail() { printf '%s\n' "$*" >&2; exit 1; }

if [[ -n ${PROMTOOL:-} ]]; then
  [[ -x $PROMTOOL ]] || fail "PROMTOOL=$PROMTOOL is not an executable file"
  echo "$PROMTOOL"; exit 0
fi
if command -v promtool >/dev/null; then command -v promtool; exit 0; fi
if [[ -x $CACHE/promtool ]]; then echo "$CACHE/promtool"; exit 0; fi

command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
  || fail "promtool is not installed, and without apt-get it cannot be fetched: install Prometheus' promtool on PATH or set PROMTOOL"
mkdir -p "$CACHE"
tmp=$(mktemp -d "$CACHE/fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# The package is ~19 MB; only its promtool binary (statically linked Go) is kept.
(cd "$tmp" && apt-get download prometheus >download.log 2>&1) \
  || fail "promtool is not installed, and 'apt-get download prometheus' failed ($(grep -m1 '^E:' "$tmp/download.log" || tail -n 1 "$tmp/download.log")): apt-get install -y prometheus"
dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
[[ -x $tmp/root/usr/bin/promtool ]] || fail "the prometheus package has no usr/bin/promtool"
install -m 755 "$tmp/root/usr/bin/promtool" "$tmp/promtool"
mv -f "$tmp/promtool" "$CACHE/promtool" # atomic: a concurrent caller sees all of it or nothing
echo "$CACHE/promtool"
