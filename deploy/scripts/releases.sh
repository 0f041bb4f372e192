#!/bin/sh
# List the releases: "<id> <kilobytes>" per complete release, oldest first, "error-page <id>" for
# each one with a 404.html, then "current <id>".
# Changes nothing.
# Usage: releases.sh REMOTE_ROOT
set -u
root=$1
for r in "$root"/releases/*; do
    case ${r##*/} in *.partial|*.manifest) continue;; esac
    { [ -d "$r" ] && [ ! -L "$r" ]; } || continue
    printf '%s %s\n' "${r##*/}" "$(du -sk -- "$r" | cut -f1)"
    [ ! -f "$r/404.html" ] || printf 'error-page %s\n' "${r##*/}"
done
cur=$(readlink "$root/current" 2>/dev/null) && printf 'current %s\n' "${cur##*/}"
exit 0
