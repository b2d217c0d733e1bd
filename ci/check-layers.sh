#!/bin/sh
# ci/check-layers.sh — the include rule between folders (docs/HARNESS.md,
# "Source layout"), checked on every `make test`:
#
#   lib  <-  models, datasets  <-  harness/cell  <-  harness/cmd
#                              <-  reports       <-  harness/cmd
#
# A folder may include its own headers, include/ (the public headers) and
# those of the folders below it; nothing includes upwards (models never
# includes harness/, harness/cell never harness/cmd, reports never
# harness/).  Each #include "x" is resolved as the compiler does: beside
# the including file first, then the -I folders in the Makefile's order.
# Prints every violation as FILE:LINE and exits 1 if there is one.
set -eu
cd "$(dirname "$0")/.."
IPATH="include lib models datasets harness/cell harness/cmd"
allowed() { # folder of the including file -> folders it may include from
    case $1 in
    lib) echo "lib include" ;;
    models) echo "lib models include" ;;
    datasets) echo "lib datasets include" ;;
    harness/cell) echo "lib models datasets harness/cell include" ;;
    reports) echo "lib models datasets reports include" ;;
    harness/cmd) echo "lib models datasets harness/cell harness/cmd reports include" ;;
    *) echo "" ;;
    esac
}
TMPBAD=$(mktemp)
trap 'rm -f "$TMPBAD"' EXIT
for dir in lib models datasets harness/cell harness/cmd reports; do
    ok=$(allowed "$dir")
    for f in "$dir"/*.c "$dir"/*.h; do
        [ -f "$f" ] || continue
        grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" | while IFS= read -r line; do
            n=${line%%:*}
            name=$(printf '%s\n' "$line" | sed 's/.*include[[:space:]]*"\([^"]*\)".*/\1/')
            found=""
            if [ -f "$dir/$name" ]; then
                found=$(cd "$(dirname "$dir/$name")" && pwd)
            else
                for p in $IPATH; do
                    if [ -f "$p/$name" ]; then found=$(cd "$(dirname "$p/$name")" && pwd); break; fi
                done
            fi
            [ -n "$found" ] || { echo "$f:$n: \"$name\" is not a header of the tree"; echo x >>"$TMPBAD"; continue; }
            rel=${found#"$PWD"/}
            case " $ok " in
            *" $rel "*) ;;
            *) echo "$f:$n: includes $rel/$(basename "$name"): $dir may include only from: $ok"; echo x >>"$TMPBAD" ;;
            esac
        done
    done
done
if [ -s "$TMPBAD" ]; then
    echo "check-layers: $(wc -l <"$TMPBAD") include(s) against the layering (docs/HARNESS.md, Source layout)" >&2
    exit 1
fi
echo "check-layers: lib <- models, datasets <- harness/cell <- harness/cmd; reports <- harness/cmd: clean"
