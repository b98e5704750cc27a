public import JankJSON

/// A JSON-RPC 2.0 request id: a string or a number (null for notifications' errors).
public enum JSONRPCID: Sendable, Hashable, Codable, CustomStringConvertible {
  case number(Int)
  case string(String)
  case null

  public init(from decoder: any Decoder) throws {
    let c = try decoder.singleValueContainer()
    if c.decodeNil() {
      self = .null
    } else if let n = try? c.decode(Int.self) {
      self = .number(n)
    } else {
      self = .string(try c.decode(String.self))
    }
  }

  public func encode(to encoder: any Encoder) throws {
    var c = encoder.singleValueContainer()
    switch self {
    case .number(let n): try c.encode(n)
    case .string(let s): try c.encode(s)
    case .null: try c.encodeNil()
    }
  }

  public var description: String {
    switch self {
    case .number(let n): String(n)
    case .string(let s): s
    case .null: "null"
    }
  }
}

/// The envelope of a request, decoded before the params so that the method picks their type.
struct JSONRPCRequestHead: Decodable {
  var jsonrpc: String?
  var id: JSONRPCID?
  var hasID: Bool
  var method: String?

  enum CodingKeys: String, CodingKey { case jsonrpc, id, method }

  init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    jsonrpc = try? c.decode(String.self, forKey: .jsonrpc)
    hasID = c.contains(.id)
    id = hasID ? ((try? c.decode(JSONRPCID.self, forKey: .id)) ?? .null) : nil
    method = try? c.decode(String.self, forKey: .method)
  }
}

struct JSONRPCParams<Params: Decodable>: Decodable {
  var params: Params
}

struct JSONRPCRequest<Params: Encodable>: Encodable {
  var jsonrpc = "2.0"
  var id: JSONRPCID
  var method: String
  var params: Params
}

public struct JSONRPCErrorObject: Codable, Sendable, Equatable {
  public var code: Int
  public var message: String
  public var data: JSONValue?
}

struct JSONRPCResponse<Result: Encodable>: Encodable {
  var jsonrpc = "2.0"
  var id: JSONRPCID
  var result: Result?
  var error: JSONRPCErrorObject?

  enum CodingKeys: String, CodingKey { case jsonrpc, id, result, error }

  func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(jsonrpc, forKey: .jsonrpc)
    try c.encode(id, forKey: .id)
    if let error {
      try c.encode(error, forKey: .error)
    } else {
      try c.encode(result, forKey: .result)
    }
  }
}

struct JSONRPCResponseHead: Decodable {
  var id: JSONRPCID?
  var error: JSONRPCErrorObject?
}

/// A whole answer read in one pass (a `list` answer of a thousand plugins is most of a
/// megabyte): the error, or else the result.
struct JSONRPCAnswer<Result: Decodable>: Decodable {
  var error: JSONRPCErrorObject?
  var result: Result?

  enum CodingKeys: String, CodingKey { case error, result }

  init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    error = try c.decodeIfPresent(JSONRPCErrorObject.self, forKey: .error)
    // Not decodeIfPresent: a `null` result is a value for JSONValue.
    result = error == nil ? try c.decode(Result.self, forKey: .result) : nil
  }
}

extension ControlError {
  var errorObject: JSONRPCErrorObject {
    var data = details
    data["kind"] = .string(kind.rawValue)
    return JSONRPCErrorObject(code: code, message: message, data: .object(data))
  }

  /// Reads an error object back into a ControlError (the client side of `errorObject`).
  init(_ object: JSONRPCErrorObject) {
    var details = object.data?.objectValue ?? [:]
    let kindText = details.removeValue(forKey: "kind")?.stringValue
    let kind: Kind
    if let kindText, let known = Kind(rawValue: kindText) {
      kind = known
    } else if object.code == JSONRPCErrorCode.invalidParams || object.code == JSONRPCErrorCode.invalidRequest
      || object.code == JSONRPCErrorCode.methodNotFound || object.code == JSONRPCErrorCode.parseError
    {
      kind = .invalid
    } else {
      kind = .internal
    }
    self.init(kind, object.message, details: details)
  }
}
