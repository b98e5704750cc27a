// swift-tools-version:6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
  .swiftLanguageMode(.v6),
  .enableUpcomingFeature("ExistentialAny"),
]

let grpcCore = Target.Dependency.product(name: "GRPCCore", package: "grpc-swift-2")
let grpcProtobuf = Target.Dependency.product(name: "GRPCProtobuf", package: "grpc-swift-protobuf")
let grpcTransport = Target.Dependency.product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let lifecycle = Target.Dependency.product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
let nioCore = Target.Dependency.product(name: "NIOCore", package: "swift-nio")
let nioPosix = Target.Dependency.product(name: "NIOPosix", package: "swift-nio")
let metrics = Target.Dependency.product(name: "Metrics", package: "swift-metrics")
let prometheus = Target.Dependency.product(name: "Prometheus", package: "swift-prometheus")
let hummingbird = Target.Dependency.product(name: "Hummingbird", package: "hummingbird")
let nioHTTPTypes = Target.Dependency.product(name: "NIOHTTPTypes", package: "swift-nio-extras")

/// Plugins start faster without every symbol in the dynamic symbol table: the Swift runtime
/// calls dladdr on itself at start-up, which scans that table (42 000 entries in a static
/// plugin, about 1 ms).
let pluginLinkerSettings: [LinkerSetting] = [.unsafeFlags(["-Xlinker", "--no-export-dynamic"])]

let package = Package(
  name: "jank",
  platforms: [.macOS(.v15)],
  products: [
    .library(name: "JankPlugin", targets: ["JankPlugin"]),
    .executable(name: "jank-supervisor", targets: ["jank-supervisor"]),
    .executable(name: "jankctl", targets: ["jankctl"]),
    .executable(name: "jank-api", targets: ["jank-api"]),
    .executable(name: "jank-bench", targets: ["jank-bench"]),
    .executable(name: "hello-world", targets: ["hello-world"]),
  ],
  dependencies: [
    .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
    .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
    .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
    .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
  ],
  targets: [
    // A JSON value type shared by every layer; knows nothing of gRPC or sockets.
    .target(name: "JankJSON", swiftSettings: swiftSettings),

    // Generated protobuf + gRPC code (scripts/generate-protos.sh) and JSON <-> google.protobuf.Value.
    .target(
      name: "JankProtocol",
      dependencies: ["JankJSON", grpcCore, grpcProtobuf, .product(name: "SwiftProtobuf", package: "swift-protobuf")],
      swiftSettings: swiftSettings
    ),

    // jank-frame (docs/jank-frame.md): the framed fast path between Jank peers. Codec and
    // payloads on NIOCore and swift-protobuf; no Foundation.
    .target(
      name: "JankFrame",
      dependencies: ["JankJSON", "JankProtocol", nioCore, .product(name: "SwiftProtobuf", package: "swift-protobuf")],
      swiftSettings: swiftSettings
    ),

    // The plugin SDK: implement `Plugin`, call `serve`.
    .target(
      name: "JankPlugin",
      dependencies: ["JankProtocol", "JankFrame", "CJankShim", grpcCore, grpcTransport, nioCore, nioPosix, logging],
      swiftSettings: swiftSettings
    ),

    // A NIO event loop as a Swift task executor: tasks that prefer it run on the loop's thread.
    .target(name: "JankExecutors", dependencies: [nioCore], swiftSettings: swiftSettings),

    // JSON-RPC 2.0 control channel over a Unix socket: types, server, client.
    .target(
      name: "JankControl",
      dependencies: ["JankJSON", "CJankShim", nioCore, nioPosix, logging],
      swiftSettings: swiftSettings
    ),

    // Tiny C helpers for what must happen between fork and exec, and syscalls Swift cannot call.
    .target(name: "CJankShim"),

    // libsystemd (sd_notify, sd_watchdog_enabled) through pkg-config.
    .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),

    // The engine: discovery, manifests, launcher, plugin client, supervision.
    .target(
      name: "JankSupervisorCore",
      dependencies: [
        "JankProtocol", "JankFrame", "JankControl", "JankJSON", "CJankShim", "CSystemd",
        grpcCore, grpcTransport, grpcProtobuf, nioCore, nioPosix, logging, lifecycle, metrics, prometheus,
        .product(name: "Crypto", package: "swift-crypto"),
      ],
      swiftSettings: swiftSettings
    ),

    .executableTarget(
      name: "jank-supervisor",
      dependencies: ["JankSupervisorCore", "JankControl", argumentParser, logging, lifecycle],
      swiftSettings: swiftSettings
    ),
    // HTTP: routes, envelope, error mapping, auth, metrics, the OpenAPI document.
    .target(
      name: "JankHTTP",
      dependencies: ["JankControl", "JankJSON", hummingbird, nioHTTPTypes, nioCore, metrics, prometheus, logging],
      resources: [.copy("openapi.json")],
      swiftSettings: swiftSettings
    ),
    .executableTarget(
      name: "jank-api",
      dependencies: ["JankHTTP", argumentParser, logging, hummingbird],
      swiftSettings: swiftSettings
    ),
    .executableTarget(
      name: "jankctl",
      dependencies: ["JankControl", "JankJSON", argumentParser],
      swiftSettings: swiftSettings
    ),

    // Counts heap allocations by standing in front of glibc's malloc; linked only into jank-bench.
    .target(name: "CJankAllocCounter"),

    // Benchmarks (not tests): scripts/bench.sh runs them beside a go-plugin Go pair.
    .executableTarget(
      name: "jank-bench",
      dependencies: ["JankSupervisorCore", "JankExecutors", "JankControl", "JankJSON", "CJankAllocCounter", argumentParser, logging, nioPosix],
      swiftSettings: swiftSettings
    ),

    // Example plugin, built by the same package so the gRPC stack is compiled once.
    .executableTarget(
      name: "hello-world",
      dependencies: ["JankPlugin"],
      path: "plugins/hello-world/Sources/hello-world",
      swiftSettings: swiftSettings,
      linkerSettings: pluginLinkerSettings
    ),

    // A plugin that misbehaves on request, for the integration tests.
    .executableTarget(
      name: "fault-plugin",
      dependencies: ["JankPlugin", logging],
      path: "Tests/Fixtures/fault-plugin",
      swiftSettings: swiftSettings,
      linkerSettings: pluginLinkerSettings
    ),

    .testTarget(
      name: "JankProtocolTests",
      dependencies: ["JankProtocol", "JankJSON", "JankFrame", nioCore],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "JankControlTests",
      dependencies: ["JankControl", "JankJSON"],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "JankSupervisorCoreTests",
      dependencies: ["JankSupervisorCore", "JankControl", "JankJSON", logging],
      swiftSettings: swiftSettings
    ),
    // Real processes: the built binaries, sockets and signals.
    .testTarget(
      name: "JankIntegrationTests",
      dependencies: [
        "JankSupervisorCore", "JankControl", "JankJSON", "JankFrame", "JankProtocol", nioCore, nioPosix,
        "jank-supervisor", "jankctl", "jank-api", "jank-bench", "hello-world", "fault-plugin",
      ],
      swiftSettings: swiftSettings
    ),
  ]
)
