#!/bin/sh
# List the releases: "<id> <kilobytes>" per complete release, oldest first, then "current <id>".
# Changes nothing.
# Usage: releases.sh REMOTE_ROOT
set -u
root=$1
for r in "$root"/releases/*; do
    case ${r##*/} in *.partial|*.manifest) continue;; esac
    [ -d "$r" ] && [ ! -L "$r" ] && printf '%s %s\n' "${r##*/}" "$(du -sk -- "$r" | cut -f1)"
done
cur=$(readlink "$root/current" 2>/dev/null) && printf 'current %s\n' "${cur##*/}"
exit 0
