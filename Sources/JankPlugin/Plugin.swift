@_exported public import JankJSON
import JankProtocol

/// What a Jank plugin implements. Call ``serve(_:)`` with an instance from `main`.
///
/// ```swift
/// struct Greeter: Plugin {
///   func execute(method: String, args: [String: JSONValue]) async throws -> [String: JSONValue] {
///     guard method == "greet" else { throw PluginError("unknown method: \(method)") }
///     return ["message": .string("Hello!")]
///   }
/// }
/// ```
public protocol Plugin: Sendable {
  /// Answers one call. A thrown error reaches the caller as the plugin's error text.
  func execute(method: String, args: [String: JSONValue]) async throws -> [String: JSONValue]

  /// Throws when the plugin cannot serve; the host restarts it after repeated failures.
  func healthCheck() async throws
}

extension Plugin {
  public func healthCheck() async throws {}

  /// The answer both transports give: "healthy" unless `healthCheck` throws.
  func healthCheckResponse() async -> Plugin_HealthCheckResponse {
    var response = Plugin_HealthCheckResponse()
    do {
      try await healthCheck()
      response.status = "healthy"
    } catch {
      response.status = "unhealthy"
    }
    return response
  }
}

/// An error whose message is sent to the caller verbatim.
public struct PluginError: Error, CustomStringConvertible, Sendable, Equatable {
  public var message: String

  public init(_ message: String) {
    self.message = message
  }

  public var description: String { message }
}
