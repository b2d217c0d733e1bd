#!/bin/sh
# bench_vs_torch.sh — `make bench-vs-torch`: makes sure Debian's PyTorch is
# there, then runs tests/bench/bench_vs_torch.py with the arguments given.
# As root it installs python3-torch if missing (as ci/install-deps.sh does
# for the build's packages); otherwise it names the package and exits 2.
# PYTHON: the interpreter (default /usr/bin/python3, the one python3-torch
# installs into).
PYTHON=${PYTHON:-/usr/bin/python3}
HERE=$(dirname "$0")
if ! "$PYTHON" -c 'import torch' 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        echo "bench-vs-torch: installing python3-torch (PyTorch for Debian's python3)" >&2
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends python3-torch >&2; }; then
            echo "bench-vs-torch: apt-get failed; run: apt-get install python3-torch" >&2
            exit 2
        fi
        if ! "$PYTHON" -c 'import torch' 2>/dev/null; then
            echo "bench-vs-torch: $PYTHON still cannot import torch after installing python3-torch" >&2
            exit 2
        fi
    else
        echo "bench-vs-torch: $PYTHON cannot import torch; run as root: apt-get install python3-torch" >&2
        exit 2
    fi
fi
exec "$PYTHON" "$HERE/bench_vs_torch.py" "$@"
