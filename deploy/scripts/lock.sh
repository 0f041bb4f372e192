#!/bin/sh
# Hold the site's deploy lock until our stdin closes (the deploy ended, or its SSH connection
# dropped: sshd then ends this session). The kernel frees a flock with its last holder, so a
# killed deploy never leaves a stale lock.
# Usage: lock.sh LOCK_FILE HOLDER TIMEOUT_SECONDS
# Prints "WAIT <holder>" while another deploy holds it, then "LOCKED", or "TIMEOUT <holder>" and exits 75.
set -u
lock=$1 holder=$2 timeout=$3

exec 9>>"$lock" || exit 1
if ! flock -n 9; then
    printf 'WAIT %s\n' "$(head -c 300 "$lock.holder" 2>/dev/null | tr -d '\n')"
    if ! flock -w "$timeout" 9; then
        printf 'TIMEOUT %s\n' "$(head -c 300 "$lock.holder" 2>/dev/null | tr -d '\n')"
        exit 75
    fi
fi
# Renamed into place: a waiting deploy never reads it half written.
printf '%s\n' "$holder" > "$lock.holder.tmp" && mv -f "$lock.holder.tmp" "$lock.holder"
echo LOCKED
cat > /dev/null
rm -f "$lock.holder"
