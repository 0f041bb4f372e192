#!/bin/sh
# Write one staged or live certificate folder as a tar to stdout, so that another host of the
# same site can stage the very same certificate (one order serves the group).
# Usage: cert-read.sh TLS_DIR CERT_ID
set -eu
cd "$1/certs/$2"
tar -c -f - privkey.pem fullchain.pem meta.json
