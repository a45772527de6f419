#!/bin/sh
# Entry point of the quarkfs sidecar container (see Dockerfile, compose.yaml): mounts the view
# of $QUARKFS_SRC on $QUARKFS_MNT in the foreground, as PID 1. SIGTERM (docker stop) makes
# quarkfs unmount and exit 0. Extra arguments are passed to quarkfs (e.g. -o log=debug).
set -eu
: "${QUARKFS_SRC:=/models/src}"
: "${QUARKFS_MNT:=/models/view}"
: "${QUARKFS_OPTIONS:=spec=int8,allow_other}"

if [ ! -e /dev/fuse ]; then
    echo "quarkfs-sidecar: /dev/fuse is missing: run with --device /dev/fuse --cap-add SYS_ADMIN" \
         "(or use 'quarkfs export' where FUSE is not allowed)" >&2
    exit 1
fi
mkdir -p "$QUARKFS_MNT"
# A view left behind by a killed container answers ENOTCONN: detach it first.
if mountpoint -q "$QUARKFS_MNT" 2>/dev/null || ! ls "$QUARKFS_MNT" >/dev/null 2>&1; then
    fusermount3 -uz "$QUARKFS_MNT" 2>/dev/null || umount -l "$QUARKFS_MNT" 2>/dev/null || true
fi
exec quarkfs -f -o "$QUARKFS_OPTIONS" "$@" "$QUARKFS_SRC" "$QUARKFS_MNT"
