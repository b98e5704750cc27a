#!/bin/sh
# Builds the Go test host offline (GOPATH mode, Debian's Go packages) to $1 (default
# ./go-host next to this script). It shares plugins/hello-world-go/pluginpb (the one copy of
# the generated plugin.proto code) with the Go plugin: both are linked into a temporary
# GOPATH, removed afterwards.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
output=${1:-$here/go-host}
case $output in /*) ;; *) output=$(pwd)/$output ;; esac
gopath=$(mktemp -d)
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/jank.dev"
ln -s "$repo/plugins/hello-world-go" "$gopath/src/jank.dev/hello-world-go"
ln -s "$here" "$gopath/src/jank.dev/go-host"
# Go needs a build cache; without HOME or XDG_CACHE_HOME it goes in the temporary GOPATH.
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ]; then
  GOCACHE=$gopath/cache
  export GOCACHE
fi
cd "$gopath/src/jank.dev/go-host"
GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$gopath:/usr/share/gocode" CGO_ENABLED=0 go build -o "$output" .
