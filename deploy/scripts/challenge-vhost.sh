#!/bin/sh
# Before an ACME order for names the live vhost does not serve yet: install the live vhost plus
# port-80 challenge-only servers for those names (stdin), test, reload; `restore` puts the live
# vhost back after the order, whatever its outcome (vhost.conf.before-order stays until nginx
# runs it again). Never removes a TLS server.
# Usage: challenge-vhost.sh apply|restore VHOST_FILE NGINX_LOCK NGINX_WORD...   (NGINX_LOCK: see nginx-test.sh)
# Exit 3: nginx -t failed (the live vhost is back); 6: the deploy user may not run nginx; 8: no lock.
set -u
action=$1 vhost=$2 nginx_lock=$3
shift 3
umask 022
lock_nginx() {  # see nginx-test.sh: every pelican-https site of this nginx takes this lock around its nginx steps
    [ -r "$1" ] || { echo "cannot read $1 (the nginx lock)" >&2; exit 8; }
    exec 8< "$1"
    flock -w 120 8 || { echo "could not lock $1 within 120 s" >&2; exit 8; }
}
lock_nginx "$nginx_lock"
test_and_reload() {
    out=$("$@" -t 2>&1) || {
        case $out in *"sudo:"*) printf '%s\n' "$out" >&2; return 6;; esac
        printf '%s\n' "$out" >&2; return 3; }
    "$@" -s reload >&2 || return 4
}
case $action in
apply)
    if [ -f "$vhost" ]; then cp -p -- "$vhost" "$vhost.before-order"; else : > "$vhost.before-order"; fi || exit 1
    cat > "$vhost.order" && mv -f -- "$vhost.order" "$vhost" || exit 1
    test_and_reload "$@" || { status=$?; mv -f -- "$vhost.before-order" "$vhost"; test_and_reload "$@"; exit "$status"; }
    ;;
restore)
    [ -f "$vhost.before-order" ] || exit 0
    # before-order goes only once nginx runs the live vhost again: until then the next deploy
    # sees the order as pending and restores it again.
    cp -p -- "$vhost.before-order" "$vhost.restore" && mv -f -- "$vhost.restore" "$vhost" &&
        test_and_reload "$@" && rm -f -- "$vhost.before-order"
    ;;
esac
