#!/bin/sh
# Print what the server has, in sections, for the deploy to decide on (deploy/state.py parses it).
# Changes nothing.
# Usage: state.sh REMOTE_ROOT STATE_DIR NGINX_WORD...   (NGINX_WORD: nginx without sudo, for -V)
set -u
root=$1 state=$2
shift 2
releases=$root/releases
tls=$state/tls

section() { printf '\n==pelican-https== %s\n' "$1"; }
public_key() {  # the key's public half, computed here: the private key never travels
    if [ ! -e "$1" ]; then echo NO-KEY
    elif command -v openssl > /dev/null 2>&1; then openssl pkey -in "$1" -pubout 2>/dev/null || echo BAD-KEY
    else echo NO-OPENSSL; fi
}
certificate() {  # meta.json, chain and public key of one certificate folder
    section "$2 meta"; cat "$1/meta.json" 2>/dev/null
    section "$2 chain"; cat "$1/fullchain.pem" 2>/dev/null
    section "$2 key"; public_key "$1/privkey.pem"
}

section nginx; "$@" -V 2>&1
section journal; cat "$state/commit.journal" 2>/dev/null
section current; cur=$(readlink "$root/current" 2>/dev/null) && printf '%s\n' "${cur##*/}"
[ ! -e "$root/current" ] || [ -L "$root/current" ] || echo NOT-A-LINK
section releases
for f in "$releases"/*; do [ -d "$f" ] && [ ! -L "$f" ] && printf '%s\n' "${f##*/}"; done
section vhost; cat "$state/nginx/vhost.conf" 2>/dev/null
section order-pending; [ ! -f "$state/nginx/vhost.conf.before-order" ] || echo yes
live=$(readlink "$tls/live" 2>/dev/null) && live=${live##*/}
section live-id; printf '%s\n' "${live:-}"
[ -z "${live:-}" ] || certificate "$tls/certs/$live" live
# The newest certificate staged but not live: paid for by a deploy that failed later.
staged=
for d in "$tls"/certs/*; do
    case ${d##*/} in *.partial|"${live:-}") continue;; esac
    [ -f "$d/fullchain.pem" ] && staged=${d##*/}
done
section staged-id; printf '%s\n' "$staged"
[ -z "$staged" ] || certificate "$tls/certs/$staged" staged
section ari; cat "$tls/ari.json" 2>/dev/null
# Last: the live release's manifest (gzip'd), as the rest of the output.
section manifest
[ -z "${cur:-}" ] || cat "$releases/${cur##*/}.manifest" 2>/dev/null
exit 0
