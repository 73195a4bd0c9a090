#!/usr/bin/env bash
# Install everything the tests need into a venv, then run pytest (arguments pass through).
# This is the README's test command and what .ci/run calls, once per Python version.
# $PYTHON is the interpreter (python3.11, the oldest supported, by default). Each
# version gets a venv of its own: .venv for 3.11 (the one .ci/run's linters use),
# .venv-3.12, .venv-3.13 and so on for the others.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
version_of='import sys; print("%d.%d" % sys.version_info[:2])'
# Run it, not just look it up: a pyenv shim is on PATH for versions it has not enabled.
if ! version="$("$PYTHON" -c "$version_of" 2>/dev/null)"; then
    echo "scripts/test.sh: cannot run the Python interpreter '$PYTHON'; install it, or" \
        "set PYTHON to one that runs" >&2
    exit 1
fi
if [ "$version" = 3.11 ]; then venv=.venv; else venv=".venv-$version"; fi
if [ ! -x "$venv/bin/python" ]; then
    "$PYTHON" -m venv "$venv"
elif [ "$("$venv/bin/python" -c "$version_of")" != "$version" ]; then
    # Never test one version believing it is another.
    echo "scripts/test.sh: $venv is a venv of Python" \
        "$("$venv/bin/python" -c "$version_of"), not $version ($PYTHON); remove it" >&2
    exit 1
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'

# The system programs some tests need (Graphviz's dot, a PostgreSQL server).
bash scripts/system-packages.sh

echo "scripts/test.sh: Python $version ($venv)" >&2
exec "$venv/bin/python" -m pytest "$@"
