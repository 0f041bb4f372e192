#!/bin/sh
# Remove a release that will not go live: its partial folder, or its folder and manifest when it
# was completed but never switched to. Never the live one.
# Usage: release-abort.sh REMOTE_ROOT RELEASE_ID
set -eu
root=$1 id=$2
live=$(readlink "$root/current" 2>/dev/null || true)
[ "${live##*/}" != "$id" ] || exit 0
rm -rf -- "$root/releases/$id.partial" "$root/releases/$id" "$root/releases/$id.manifest"
