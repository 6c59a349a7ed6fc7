#!/usr/bin/env bash
# Make PostgreSQL's server binaries available and print their folder (e.g. /usr/lib/postgresql/15/bin).
#
# On a fresh Debian/Ubuntu machine (CI) this installs Debian's `postgresql` package; it needs root
# (or passwordless sudo). It only installs: the team-server test fixture and
# scripts/team_server.py start their own throwaway cluster (initdb in a temporary folder, a free
# loopback port), so nothing here touches a system cluster.
set -euo pipefail

find_bindir() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
        return 0
    fi
    return 1
}

if bindir=$(find_bindir); then
    echo "$bindir"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "PostgreSQL is not installed and installing it needs root: apt-get install postgresql" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "PostgreSQL is not installed and this is not a Debian-like system (no apt-get)" >&2
    exit 1
fi
echo "installing PostgreSQL from Debian packages..." >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
# The package's own cluster may fail to start in a container without systemd; that is fine,
# only the binaries are used.
$SUDO apt-get install -y -qq --no-install-recommends postgresql postgresql-client >&2 || true
if ! bindir=$(find_bindir); then
    echo "PostgreSQL installation failed: no initdb under /usr/lib/postgresql/*/bin" >&2
    exit 1
fi
echo "$bindir"
