#!/bin/sh
# Builds bin/hello-world-go offline from Debian's Go packages in GOPATH mode: golang-go,
# golang-github-hashicorp-go-plugin-dev, golang-google-grpc-dev, golang-goprotobuf-dev.
# The plugin folder is linked into a temporary GOPATH (outside the folder, removed
# afterwards) as jank.dev/hello-world-go, so its sub-package is jank.dev/hello-world-go/pluginpb.
# Run it from anywhere: `sh build.sh` in this folder is what plugin.json's build runs.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
gopath=$(mktemp -d)
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/jank.dev" "$here/bin"
ln -s "$here" "$gopath/src/jank.dev/hello-world-go"
# Go needs a build cache; without HOME or XDG_CACHE_HOME it goes in the temporary GOPATH.
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ]; then
  GOCACHE=$gopath/cache
  export GOCACHE
fi
cd "$gopath/src/jank.dev/hello-world-go"
# Written next to the old binary, then renamed over it: a running plugin is never half-overwritten.
GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$gopath:/usr/share/gocode" CGO_ENABLED=0 \
  go build -o "$here/bin/hello-world-go.new" .
mv "$here/bin/hello-world-go.new" "$here/bin/hello-world-go"
