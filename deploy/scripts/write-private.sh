#!/bin/sh
# Write stdin to FILE atomically (temporary name, then rename), readable by the deploy user only.
# Usage: write-private.sh FILE
set -eu
file=$1
umask 077
mkdir -p -- "$(dirname -- "$file")"
cat > "$file.tmp"
mv -f -- "$file.tmp" "$file"
