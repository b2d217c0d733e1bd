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

# The installed copy finds its device profiles from its own prefix
# (bin/../share/ftbench/profiles): run it away from the source tree, whose
# ./profiles it would otherwise fall back to.
out=$(cd "$prefix" && env -u FTBENCH_PROFILES_DIR "$prefix/bin/ftbench" run --method lora --device rpi5 --model tiny \
    --seq 32 --steps 1 --out "$prefix/results" 2>&1) || { echo "$out"; echo "install test: the installed ftbench run --device rpi5 failed" >&2; exit 1; }
echo "$out" | grep -q "budget [0-9]* MiB on rpi5-8gb" || { echo "$out"; echo "install test: --device rpi5 did not resolve to the installed rpi5-8gb profile" >&2; exit 1; }
list=$(cd "$prefix" && env -u FTBENCH_PROFILES_DIR "$prefix/bin/ftbench" list 2>&1)
echo "$list" | grep -qF "devices ($prefix/share/ftbench/profiles)" || { echo "$list"; echo "install test: ftbench list does not read the installed profiles" >&2; exit 1; }
echo "install test: the installed ftbench found its device profiles in $prefix/share/ftbench/profiles"
