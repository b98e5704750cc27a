public import Hummingbird
public import Logging
import NIOCore

/// What jank-api listens on and how it reaches the supervisor.
public struct APIConfiguration: Sendable {
  public var host = "127.0.0.1"
  public var port = 8080
  public var socketPath: String
  /// When set, every route but /api/health needs `Authorization: Bearer <token>`.
  public var token: String?
  public var bodyLimit = 1 << 20

  public init(socketPath: String) {
    self.socketPath = socketPath
  }

  /// `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (loopback).
  public mutating func setListen(_ listen: String) throws(APIConfigurationError) {
    guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else {
      throw APIConfigurationError("--listen must be HOST:PORT, like 127.0.0.1:8080 (got '\(listen)')")
    }
    var host = String(listen[..<colon])
    if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    self.host = host.isEmpty ? "127.0.0.1" : host
    self.port = port
  }

  public var isLoopback: Bool {
    host == "localhost" || host == "::1" || host.hasPrefix("127.")
  }

  /// Refuses an API open to the network without a token.
  public func validate() throws(APIConfigurationError) {
    if !isLoopback, token == nil {
      throw APIConfigurationError(
        "refusing to listen on \(host):\(port) without a token: anyone who can reach it could run plugins. Set JANK_API_TOKEN=<secret> or --token-file <file>, or listen on 127.0.0.1")
    }
    if let token, token.count < 16 {
      throw APIConfigurationError("the API token is \(token.count) characters; use at least 16 (for example: openssl rand -hex 32)")
    }
    if bodyLimit < 1024 {
      throw APIConfigurationError("--body-limit must be at least 1024 bytes")
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
  }
  PluginRoutes(link: link, bodyLimit: configuration.bodyLimit, metrics: metrics).add(to: router)
  return Application(
    router: router,
    configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "jank-api"),
    onServerRunning: { channel in await onListening(channel.localAddress?.port ?? configuration.port) },
    logger: logger)
}
