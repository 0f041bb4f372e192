#!/bin/sh
# Start a new release as a copy of BASE made of hard links (no bytes move), then remove the
# paths listed on stdin (NUL-separated, relative to the release). Not live: only commit.sh
# switches `current`. Leftovers of interrupted deploys (*.partial) go first.
# Usage: release-start.sh RELEASES_DIR RELEASE_ID [BASE_ID]
set -eu
releases=$1 id=$2 base=${3:-}
partial=$releases/$id.partial

mkdir -p -- "$releases"
cd "$releases"
rm -rf -- ./*.partial
if [ -n "$base" ]; then
    cp -al -- "$base" "$partial"
else
    mkdir -m 755 -- "$partial"
fi
cd "$partial"
# Each listed path is './<path>', checked by the client (no '..', not absolute); read NUL by NUL,
# so that a name holding a newline is one path.
# shellcheck disable=SC2016 # the inner script's variables are its own
xargs -0 -r sh -c 'for path do
    case $path in ./*) rm -rf -- "$path";; *) echo "refusing to delete $path" >&2; exit 1;; esac
done' sh
