#!/bin/sh
# Run a command in a network namespace of its own whose only interface is loopback: whatever the tests
# start (Ray binds the machine's own address even when told 127.0.0.1) can reach nothing but this machine's
# loopback. A user namespace (unshare -r) makes this work without root.
if ! unshare -rn sh -c 'ip link set lo up' 2>/dev/null; then
    echo "tests/loopback.sh: cannot create a loopback-only network namespace (unshare -rn, ip link set lo up);" \
        "the Ray tests need one (enable unprivileged user namespaces, or run as root)" >&2
    exit 2
fi
exec unshare -rn sh -c 'ip link set lo up && exec "$@"' loopback "$@"
