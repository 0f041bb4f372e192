#!/bin/sh
# Check a new vhost (stdin) with `nginx -t` without making it live: it is saved as
# vhost.conf.next, put in place only for the test, and the live file put back at once. nginx
# reads its files only at a reload, which only commit.sh does.
# Usage: nginx-test.sh VHOST_FILE NGINX_WORD...
# Exit 3: nginx -t failed (its output on stderr); 6: the deploy user may not run it.
set -u
vhost=$1
shift
umask 022
cat > "$vhost.next" || exit 1
if [ -f "$vhost" ]; then cp -p -- "$vhost" "$vhost.live" || exit 1; else : > "$vhost.live" || exit 1; fi
restore() { mv -f -- "$vhost.live" "$vhost"; }
trap 'restore; exit 5' HUP INT TERM
if ! { cp -- "$vhost.next" "$vhost.testing" && mv -f -- "$vhost.testing" "$vhost"; }; then restore; exit 1; fi
out=$("$@" -t 2>&1)
status=$?
restore
trap - HUP INT TERM
case $out in *"sudo:"*) printf '%s\n' "$out" >&2; exit 6;; esac
[ "$status" -eq 0 ] || { printf '%s\n' "$out" >&2; exit 3; }
printf '%s\n' "$out"
