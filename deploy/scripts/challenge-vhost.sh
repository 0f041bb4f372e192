#!/bin/sh
# Before an ACME order for names the live vhost does not serve yet: install the live vhost plus
# port-80 challenge-only servers for those names (stdin), test, reload; `restore` puts the live
# vhost back after the order, whatever its outcome. Never removes a TLS server.
# Usage: challenge-vhost.sh apply|restore VHOST_FILE NGINX_WORD...
# Exit 3: nginx -t failed (the live vhost is back); 6: the deploy user may not run nginx.
set -u
action=$1 vhost=$2
shift 2
umask 022
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
    mv -f -- "$vhost.before-order" "$vhost" && test_and_reload "$@"
    ;;
esac
