#!/bin/sh
# Put or remove HTTP-01 challenge files. Tokens are base64url (checked by the client).
# Usage: tokens.sh put CHALLENGE_DIR TOKEN VALUE [TOKEN VALUE ...]
#        tokens.sh remove CHALLENGE_DIR TOKEN...
set -eu
action=$1 dir=$2
shift 2
umask 022
mkdir -p -- "$dir"
while [ $# -gt 0 ]; do
    case $1 in *[!A-Za-z0-9_-]*|"") echo "bad token $1" >&2; exit 1;; esac
    if [ "$action" = put ]; then
        printf '%s' "$2" > "$dir/$1.tmp" && mv -f -- "$dir/$1.tmp" "$dir/$1"
        shift 2
    else
        rm -f -- "$dir/$1"
        shift
    fi
done
