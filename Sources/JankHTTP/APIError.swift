public import HTTPTypes
public import JankControl
public import JankJSON

/// A failed request: the HTTP status, the envelope's non-zero `code`, a machine-readable
/// `kind`, and a message that says what went wrong and what to do.
public struct APIError: Error, CustomStringConvertible {
  public var status: HTTPResponse.Status
  public var code: Int
  public var kind: String
  public var message: String
  public var details: [String: JSONValue]
  /// Extra response headers (`Allow` on 405, `WWW-Authenticate` on 401).
  public var headers: HTTPFields = [:]

  public var description: String { message }

  public init(status: HTTPResponse.Status, code: Int, kind: String, message: String, details: [String: JSONValue] = [:]) {
    self.status = status
    self.code = code
    self.kind = kind
    self.message = message
    self.details = details
  }

  /// The supervisor's answer, with the HTTP status of its kind (design §7). The envelope
  /// code is the control channel's code, so jankctl and HTTP clients see the same numbers.
  public init(_ error: ControlError) {
    let status: HTTPResponse.Status =
      switch error.kind {
      case .invalid: .badRequest
      case .notFound: .notFound
      case .conflict: .conflict
      case .unavailable: .serviceUnavailable
      case .timeout: .gatewayTimeout
      case .busy: .tooManyRequests
      case .pluginError: .badGateway
      case .tooLarge: .contentTooLarge
      case .internal: .internalServerError
      }
    self.init(
      status: status, code: error.code, kind: error.kind.rawValue, message: error.message,
      details: error.details.filter { $0.key != "unreachable" })
  }

  static func invalid(_ message: String, details: [String: JSONValue] = [:]) -> APIError {
    APIError(ControlError(.invalid, message, details: details))
  }

  static func unauthorized(_ message: String) -> APIError {
    var error = APIError(status: .unauthorized, code: -32010, kind: "unauthorized", message: message)
    error.headers[.wwwAuthenticate] = #"Bearer realm="jank""#
    return error
  }

  static func routeNotFound(_ path: String) -> APIError {
    APIError(
      status: .notFound, code: -32011, kind: "no_route",
      message: "no route \(path.prefix(200)); GET /api/openapi.json lists every route")
  }

  static func methodNotAllowed(_ method: HTTPRequest.Method, path: String, allowed: HTTPRequest.Method) -> APIError {
    var error = APIError(
      status: .methodNotAllowed, code: -32012, kind: "method_not_allowed",
      message: "\(path) does not accept \(method.rawValue); use \(allowed.rawValue)")
    error.headers[.allow] = allowed.rawValue
    return error
  }

  static func tooLarge(limit: Int) -> APIError {
    APIError(ControlError(.tooLarge, "the request body is larger than the limit of \(limit) bytes; send less, or raise --body-limit on jank-api"))
  }
}
