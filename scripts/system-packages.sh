#!/usr/bin/env bash
# Install the system programs the tests need when they are missing (Debian's packages,
# as root): Graphviz's `dot` and a PostgreSQL server. scripts/test.sh runs this; .ci/run
# runs it once before the test runs it starts at once (apt-get cannot run twice at once).
set -euo pipefail

# Rendering tests need Graphviz's `dot`; install Debian's package when it is missing.
if ! command -v dot >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing graphviz (dot is missing)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
    else
        echo "warning: dot is missing and cannot be installed here; rendering tests will fail" >&2
    fi
fi

# The store tests start a real PostgreSQL server (as the `postgres` user, since
# initdb refuses root); install Debian's server when its binaries are missing.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! id postgres >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing postgresql (initdb is missing)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        echo "warning: PostgreSQL server binaries are missing; store tests will skip (or fail under CI)" >&2
    fi
fi
