#!/bin/sh
# Unpack the new and changed files (a tar on stdin, rooted at the releases folder: members
# <id>.partial/... and <id>.manifest) into the started release, check the release on disk
# against the client's digest of its manifest, and complete it (<id>.partial -> <id>).
# GNU tar replaces an existing file by unlinking it first: a hard-linked file is never written
# through, so older releases keep their copy. Still not live.
# Usage: release-unpack.sh RELEASES_DIR RELEASE_ID LISTING_SHA256
# Prints MATCHES, or DIFFERS and the release's listing (find -printf, NUL-separated) on a mismatch.
set -eu
releases=$1 id=$2 digest=$3
cd "$releases"
[ -d "$id.partial" ] || { echo "$id.partial is missing: the release was not started" >&2; exit 1; }
umask 022
tar -x -p --no-same-owner -f -
cd "$id.partial"
# The listing the client hashed (deploy/manifest.py: CANONICAL_FIND); kept in step with it.
got=$(find . -mindepth 1 \( -type d -printf '%P//d %m\0' \) -o \( -type l -printf '%P//l %l\0' \) \
        -o \( -type f -printf '%P//f %m %s\0' \) -o -printf '%P//%y\0' | LC_ALL=C sort -z | sha256sum)
if [ "${got%% *}" != "$digest" ]; then
    echo DIFFERS
    find . -mindepth 1 -printf '%y\0%m\0%s\0%l\0%P\0'
    exit 0
fi
cd ..
mv -T -- "$id.partial" "$id"
echo MATCHES
