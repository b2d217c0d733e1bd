#!/bin/sh
# An out-of-tree method builds against the installed header alone and runs.
set -eu
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
make -s install PREFIX="$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
sed 's/"lastk"/"outoftree"/' methods/lastk/lastk.c > "$prefix/outoftree.c"
cc -std=c11 -Wall -Wextra -fPIC -shared $(pkg-config --cflags ftbench) -o "$prefix/outoftree.so" "$prefix/outoftree.c"
out=$("$prefix/bin/ftbench" run --method "$prefix/outoftree.so" --model tiny --seq 32 --steps 1 --out "$prefix/results" 2>&1)
echo "$out" | grep -q "outcome *ok" || { echo "$out"; echo "install test: out-of-tree method did not run" >&2; exit 1; }
echo "install test: an out-of-tree method built against the installed header and ran"
