#!/bin/sh
# Builds bin/hello-world-go offline from Debian's Go packages in GOPATH mode: golang-go,
# golang-github-hashicorp-go-plugin-dev, golang-google-grpc-dev, golang-goprotobuf-dev.
# The plugin folder is linked into a temporary GOPATH as jank.dev/hello-world-go.
set -eu
here=$(pwd)
gopath=$(mktemp -d)
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/jank.dev" bin
ln -s "$here" "$gopath/src/jank.dev/hello-world-go"
cd "$gopath/src/jank.dev/hello-world-go"
GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$gopath:/usr/share/gocode" CGO_ENABLED=0 \
  go build -o "$here/bin/hello-world-go.new" .
mv "$here/bin/hello-world-go.new" "$here/bin/hello-world-go"
