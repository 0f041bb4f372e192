#!/bin/sh
# Print FILE if it exists (the ACME account key: it stays on the server between runs).
# Usage: read-file.sh FILE
[ ! -f "$1" ] || cat -- "$1"
