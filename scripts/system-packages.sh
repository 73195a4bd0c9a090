#!/usr/bin/env bash
# Install the system programs the tests need when they are missing (Debian's packages,
# as root): Graphviz's `dot` and a PostgreSQL server. scripts/test.sh runs this; .ci/run
# runs it once before the test runs it starts at once (apt-get cannot run twice at once).
set -euo pipefail

# install PACKAGE WHY CONSEQUENCE: apt-get PACKAGE if this machine lets us, else warn.
install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing $1 ($2)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
    else
        echo "warning: $2 and cannot be installed here; $3" >&2
    fi
}

# Rendering tests need Graphviz's `dot`.
if ! command -v dot >/dev/null 2>&1; then
    install graphviz "dot is missing" "rendering tests will fail"
fi

# The store tests start a real PostgreSQL server (as the `postgres` user, since
# initdb refuses root).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! id postgres >/dev/null 2>&1; then
    install postgresql "initdb is missing" "store tests will skip (or fail under CI)"
fi
