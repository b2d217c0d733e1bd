#!/bin/sh
# Out-of-tree methods build against the installed method header alone and
# run: the tutorial plugin (lastk) with nothing but ftbench_method.h, and
# LoRA with the method kit (ftbench_kit.h + libftbench_methodkit.a).  The
# core header is not installed, so a plugin cannot reach past the ABI.
set -eu
start=$(date +%s)
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
make -s install PREFIX="$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
if [ -e "$prefix/include/ftbench.h" ]; then
    echo "install test: the core header ftbench.h was installed: plugins could reach past the ABI" >&2
    exit 1
fi
run_plugin() { # name, .so: one step of it must end "ok"
    out=$("$prefix/bin/ftbench" run --method "$2" --model tiny --seq 32 --steps 1 --out "$prefix/results" 2>&1)
    echo "$out" | grep -q "outcome *ok" || { echo "$out"; echo "install test: out-of-tree $1 did not run" >&2; exit 1; }
}
sed 's/"lastk"/"outoftree"/' methods/lastk/lastk.c > "$prefix/outoftree.c"
cc -std=c11 -Wall -Wextra -Werror -fPIC -shared $(pkg-config --cflags ftbench) -o "$prefix/outoftree.so" "$prefix/outoftree.c"
run_plugin outoftree "$prefix/outoftree.so"
sed 's/\.name = "lora"/.name = "kitlora"/' methods/lora/lora.c > "$prefix/kitlora.c"
cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC -fopenmp -shared $(pkg-config --cflags ftbench) \
    -o "$prefix/kitlora.so" "$prefix/kitlora.c" $(pkg-config --variable=kitlibs ftbench) -lm
run_plugin kitlora "$prefix/kitlora.so"
echo "install test: out-of-tree methods (one on the method header alone, one with the method kit) built and ran ($(($(date +%s) - start)) s)"

# The installed copy finds its device profiles from its own prefix
# (bin/../share/ftbench/profiles): run it away from the source tree, whose
# ./profiles it would otherwise fall back to.
out=$(cd "$prefix" && env -u FTBENCH_PROFILES_DIR "$prefix/bin/ftbench" run --method lora --device rpi5 --model tiny \
    --seq 32 --steps 1 --out "$prefix/results" 2>&1) || { echo "$out"; echo "install test: the installed ftbench run --device rpi5 failed" >&2; exit 1; }
echo "$out" | grep -q "budget [0-9]* MiB on rpi5-8gb" || { echo "$out"; echo "install test: --device rpi5 did not resolve to the installed rpi5-8gb profile" >&2; exit 1; }
list=$(cd "$prefix" && env -u FTBENCH_PROFILES_DIR "$prefix/bin/ftbench" list 2>&1)
echo "$list" | grep -qF "devices ($prefix/share/ftbench/profiles)" || { echo "$list"; echo "install test: ftbench list does not read the installed profiles" >&2; exit 1; }
echo "install test: the installed ftbench found its device profiles in $prefix/share/ftbench/profiles"
