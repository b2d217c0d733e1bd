#!/bin/sh
# Checks the Debian packages ftbench builds and tests with.  As root it
# installs what is missing; otherwise it prints the one apt-get line to run.
PKGS="gcc make pkg-config libopenblas-dev libjemalloc-dev libpfm4-dev libcriterion-dev libjansson-dev libpcre2-dev gnuplot-nox valgrind"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "ftbench: installing missing Debian packages:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends $missing >&2 && exit 0
    echo "ftbench: apt-get failed; run: apt-get install$missing" >&2
    exit 1
fi
echo "ftbench: missing Debian packages; run as root: apt-get install$missing" >&2
exit 1
