#!/usr/bin/env bash
# Creates jank-api's bearer token in FILE (default /etc/jank/api-token) unless it exists:
# 32 random bytes as 64 hex characters, mode 0600, owned by whoever runs this (root from
# install.sh). jank-api.service reads it through LoadCredential=, so it never has to be
# readable by the API's dynamic user, nor by the jank user that plugins' supervisor runs as.
set -euo pipefail
file=${1:-/etc/jank/api-token}
if [ -e "$file" ]; then
  echo "keeping the API token in $file"
  exit 0
fi
umask 077
tmp=$(mktemp "$(dirname "$file")/.api-token.XXXXXX")
od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$tmp"
chmod 0600 "$tmp"
mv -n "$tmp" "$file"
rm -f "$tmp"
echo "created an API token in $file (root only); clients send: Authorization: Bearer \$(cat $file)"
