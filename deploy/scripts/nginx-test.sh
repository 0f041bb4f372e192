#!/bin/sh
# Check a new vhost (stdin) with `nginx -t` without making it live: it is saved as
# vhost.conf.next, put in place only for the test, and the live file put back at once. nginx
# reads its files only at a reload, which only commit.sh does.
# NGINX_LOCK (the nginx executable, opened read-only) is flock'ed by every pelican-https site of
# this server around its nginx files' swaps, tests and reloads: another site's reload never
# catches this test's file in place. (A reload from outside, e.g. `systemctl reload nginx`, does
# not take it: the window is the few milliseconds of the test.)
# Usage: nginx-test.sh VHOST_FILE NGINX_LOCK NGINX_WORD...
# Exit 3: nginx -t failed (its output on stderr); 6: the deploy user may not run it; 8: no lock.
set -u
vhost=$1 nginx_lock=$2
shift 2
umask 022
lock_nginx() {  # every pelican-https site of this nginx takes this lock around its nginx steps
    [ -r "$1" ] || { echo "cannot read $1 (the nginx lock)" >&2; exit 8; }
    exec 8< "$1"
    flock -w 120 8 || { echo "could not lock $1 within 120 s" >&2; exit 8; }
}
lock_nginx "$nginx_lock"
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
