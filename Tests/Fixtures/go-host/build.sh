#!/bin/sh
# Builds the Go test host offline (GOPATH mode, Debian's Go packages) to $1 (default
# ./go-host). It shares plugins/hello-world-go/pluginpb with the Go plugin.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
output=${1:-$here/go-host}
gopath=$(mktemp -d)
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/jank.dev"
ln -s "$repo/plugins/hello-world-go" "$gopath/src/jank.dev/hello-world-go"
ln -s "$here" "$gopath/src/jank.dev/go-host"
cd "$gopath/src/jank.dev/go-host"
GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$gopath:/usr/share/gocode" CGO_ENABLED=0 go build -o "$output" .
