public import JankJSON

/// An application error of the control channel: a kind that programs switch on and a
/// sentence for people that says what went wrong and what to do.
public struct ControlError: Error, Sendable, Equatable, CustomStringConvertible {
  public enum Kind: String, Sendable, Codable, CaseIterable {
    case notFound = "not_found"
    case invalid
    case conflict
    case unavailable
    case timeout
    case busy
    case pluginError = "plugin_error"
    case tooLarge = "too_large"
    /// Not an application kind: a JSON-RPC protocol error (parse, method, internal).
    case `internal`
  }

  public var kind: Kind
  public var message: String
  /// Extra machine-readable details, sent as `error.data` next to `kind`.
  public var details: [String: JSONValue]

  public init(_ kind: Kind, _ message: String, details: [String: JSONValue] = [:]) {
    self.kind = kind
    self.message = message
    self.details = details
  }

  public var description: String { message }

  /// The JSON-RPC error code for this kind (application errors live in -32000...-32099).
  public var code: Int {
    switch kind {
    case .invalid: JSONRPCErrorCode.invalidParams
    case .notFound: -32001
    case .conflict: -32002
    case .unavailable: -32003
    case .timeout: -32004
    case .busy: -32005
    case .pluginError: -32006
    case .tooLarge: -32007
    case .internal: JSONRPCErrorCode.internalError
    }
  }
}

public enum JSONRPCErrorCode {
  public static let parseError = -32700
  public static let invalidRequest = -32600
  public static let methodNotFound = -32601
  public static let invalidParams = -32602
  public static let internalError = -32603
}
