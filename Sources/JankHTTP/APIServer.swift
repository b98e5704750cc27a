public import Hummingbird
public import Logging
import NIOCore

#if canImport(Glibc)
  import Glibc
#endif

/// What jank-api listens on and how it reaches the supervisor.
public struct APIConfiguration: Sendable {
  /// Shorter tokens can be guessed; jank-api refuses them at start.
  public static let minimumTokenLength = 16

  public var host = "127.0.0.1"
  public var port = 8080
  public var socketPath: String
  /// When set, every route but /api/health needs `Authorization: Bearer <token>`.
  public var token: String?
  public var bodyLimit = 1 << 20
  /// Open connections at most; past it jank-api stops accepting until one closes, so that
  /// idle or slow clients cannot use up its descriptors (it raises its soft descriptor limit to
  /// the hard one at start; the unit's LimitNOFILE is above this).
  public var maxConnections = 4096
  /// A connection with no request in progress (idle keep-alive, or a request head that
  /// never completes) is closed after this long.
  public var idleTimeout = Duration.seconds(60)
  /// A request whose body stops arriving for this long has its connection closed.
  public var readTimeout = Duration.seconds(30)
  /// The longest jank-api waits for the supervisor's answer to a call that can run long
  /// (register, start, stop, restart, build, unregister, execute without timeout_ms). An
  /// execute with timeout_ms waits timeout_ms plus a margin; reads wait `quickCallTimeout`.
  public var callTimeout = Duration.seconds(3600)
  /// list, get, logs, status and metrics answer from the supervisor's memory.
  public static let quickCallTimeout = Duration.seconds(10)

  public init(socketPath: String) {
    self.socketPath = socketPath
  }

  /// `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (loopback). `source` names the flag or variable
  /// the value came from, for the message.
  public mutating func setListen(_ listen: String, source: String = "--listen") throws(APIConfigurationError) {
    guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else {
      throw APIConfigurationError("\(source) must be HOST:PORT, like 127.0.0.1:8080 or [::1]:8080 (got '\(listen)')")
    }
    var host = String(listen[..<colon])
    if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    self.host = host.isEmpty ? "127.0.0.1" : host
    self.port = port
  }

  /// `host:port`, with brackets around an IPv6 host.
  public var address: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

  /// Only a literal loopback address (127.0.0.0/8, ::1, ::ffff:127.x.x.x) or the name
  /// `localhost`: any other name could resolve anywhere (`127.evil.example` is a hostname).
  public var isLoopback: Bool { Self.isLoopbackHost(host) }

  /// Whether `host` (no brackets, no port) is a literal loopback address or `localhost`.
  public static func isLoopbackHost(_ host: String) -> Bool {
    if host.lowercased() == "localhost" { return true }
    var v4 = in_addr()
    if inet_pton(AF_INET, host, &v4) == 1 {
      return UInt32(bigEndian: v4.s_addr) >> 24 == 127
    }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, host, &v6) == 1 {
      let bytes = withUnsafeBytes(of: v6) { Array($0) }
      let loopback = bytes[0..<15].allSatisfy { $0 == 0 } && bytes[15] == 1
      let mapped = bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff && bytes[12] == 127
      return loopback || mapped
    }
    return false
  }

  /// Refuses an API open to the network without a token.
  public func validate() throws(APIConfigurationError) {
    if !isLoopback, token == nil {
      throw APIConfigurationError(
        "refusing to listen on \(address) without a token: anyone who can reach it could run plugins (only a literal loopback address or localhost counts as local). Set JANK_API_TOKEN=<secret of 16+ characters, e.g. from openssl rand -hex 32>, or --token-file <file> (JANK_API_TOKEN_FILE), or listen on 127.0.0.1")
    }
    if let token, token.count < Self.minimumTokenLength {
      throw APIConfigurationError("the API token is \(token.count) characters; use at least \(Self.minimumTokenLength) (for example: openssl rand -hex 32)")
    }
    if maxConnections < 1 {
      throw APIConfigurationError("the connection limit (--max-connections or JANK_API_MAX_CONNECTIONS) must be at least 1 (got \(maxConnections))")
    }
    if bodyLimit < 1024 {
      throw APIConfigurationError("the body limit (--body-limit or JANK_API_BODY_LIMIT) must be at least 1024 bytes (got \(bodyLimit))")
    }
  }
}

public struct APIConfigurationError: Error, CustomStringConvertible {
  public var description: String
  init(_ description: String) { self.description = description }
}

/// Builds the jank-api application: middlewares (request id, metrics, envelope errors,
/// auth) around the plugin routes. `onListening` receives the bound port (useful with port 0).
public func makeAPIApplication(
  configuration: APIConfiguration, logger: Logger, onListening: @escaping @Sendable (Int) async -> Void = { _ in }
) -> some ApplicationProtocol {
  let link = SupervisorLink(socketPath: configuration.socketPath, logger: logger)
  let metrics = APIMetrics()
  let router = Router(context: APIRequestContext.self)
  router.add(middleware: RequestIDMiddleware())
  router.add(middleware: RequestMetricsMiddleware(metrics: metrics, routes: Set(PluginRoutes.table.keys)))
  router.add(middleware: EnvelopeErrorMiddleware(routes: PluginRoutes.table, bodyLimit: configuration.bodyLimit))
  if let token = configuration.token {
    router.add(middleware: BearerTokenMiddleware(token: Array(token.utf8), openPaths: ["/api/health"]))
  } else {
    // Without a token only the loopback interface guards the API: a web page must not
    // drive it (CSRF) or read it through a rebound DNS name.
    router.add(middleware: LocalOnlyMiddleware(routes: PluginRoutes.table))
  }
  PluginRoutes(link: link, bodyLimit: configuration.bodyLimit, callTimeout: configuration.callTimeout, metrics: metrics).add(to: router)
  let readTimeout = TimeAmount.nanoseconds(Int64(configuration.readTimeout.components.seconds) * 1_000_000_000)
  return Application(
    router: router,
    server: .http1(configuration: .init(
      additionalChannelHandlers: [RequestReadTimeoutHandler(timeout: readTimeout)],
      idleTimeout: .nanoseconds(Int64(configuration.idleTimeout.components.seconds) * 1_000_000_000))),
    configuration: .init(
      address: .hostname(configuration.host, port: configuration.port), serverName: "jank-api",
      availableConnectionsDelegate: .maximum(configuration.maxConnections, logger: logger)),
    onServerRunning: { channel in await onListening(channel.localAddress?.port ?? configuration.port) },
    logger: logger)
}
