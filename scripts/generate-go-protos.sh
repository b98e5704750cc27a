#!/usr/bin/env bash
# Regenerates the Go code of plugin.proto used by plugins/hello-world-go and the Go test
# host (committed, like the Swift code). Needs protobuf-compiler and golang-goprotobuf-dev
# (protoc-gen-go 1.3, with its grpc plugin), from Debian.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
protoc -I Protos --go_out=plugins=grpc,Mplugin.proto=jank.dev/hello-world-go/pluginpb,Mgoogle/protobuf/any.proto=github.com/golang/protobuf/ptypes/any:"$out" Protos/plugin.proto
# plugin.proto's go_package names the package "proto"; Go code here imports it as pluginpb.
sed 's/^package proto$/package pluginpb/' "$(find "$out" -name plugin.pb.go)" > plugins/hello-world-go/pluginpb/plugin.pb.go
echo "wrote plugins/hello-world-go/pluginpb/plugin.pb.go"
