#!/bin/sh
# Stage a certificate: a tar on stdin (privkey.pem, fullchain.pem, meta.json) becomes
# tls/certs/<id>/, private to the deploy user. Not live: commit.sh switches to it. Staged
# certificates stay until pruned, so one paid for by a failed deploy serves the next one.
# Usage: cert-stage.sh TLS_DIR CERT_ID
set -eu
tls=$1 id=$2
umask 077
mkdir -p -- "$tls/certs"
cd "$tls/certs"
rm -rf -- ./*.partial
[ ! -e "$id" ] || { cat > /dev/null; echo "already staged"; exit 0; }
mkdir -- "$id.partial"
tar -x --no-same-owner -f - -C "$id.partial"
for f in privkey.pem fullchain.pem meta.json; do
    [ -s "$id.partial/$f" ] || { echo "$f missing from the staged certificate" >&2; exit 1; }
done
chmod 600 "$id.partial/privkey.pem"
mv -T -- "$id.partial" "$id"
