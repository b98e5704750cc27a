#!/usr/bin/env bash
# Regenerates Sources/JankProtocol/Generated from Protos/*.proto.
# The output is committed: building the protoc plugins in every CI run is too slow.
#   needs: protoc (Debian's protobuf-compiler); the Swift plugins are built from the
#   mirrored swift-protobuf and grpc-swift-protobuf packages in a scratch package.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${JANK_GEN_DIR:-${TMPDIR:-/tmp}/jank-protoc-plugins}

command -v protoc >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler; }

mkdir -p "$work/Sources/placeholder"
cat > "$work/Package.swift" <<'SWIFT'
// swift-tools-version:6.1
import PackageDescription
let package = Package(
  name: "jank-protoc-plugins",
  dependencies: [
    .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
  ],
  targets: [.executableTarget(name: "placeholder")]
)
SWIFT
echo 'print("placeholder")' > "$work/Sources/placeholder/main.swift"
(cd "$work" && swift build -c release --product protoc-gen-swift && swift build -c release --product protoc-gen-grpc-swift-2)
bin="$work/.build/release"

out="$root/Sources/JankProtocol/Generated"
rm -rf "$out" && mkdir -p "$out"
protoc \
  --proto_path="$root/Protos" \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift="$bin/protoc-gen-grpc-swift-2" \
  --swift_opt=Visibility=Public \
  --swift_out="$out" \
  --grpc-swift_opt=Visibility=Public \
  --grpc-swift_out="$out" \
  "$root"/Protos/*.proto
echo "generated: $(ls "$out" | tr '\n' ' ')"
