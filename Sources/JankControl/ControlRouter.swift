#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import JankJSON

/// Maps method names to typed handlers. Each handler decodes its own params, so a bad
/// field is reported as -32602 with the decoder's explanation.
public struct ControlRouter: Sendable {
  typealias Handler = @Sendable (_ request: Data) async -> Result<Data, ControlError>

  private var handlers: [String: Handler] = [:]
  /// Why a connecting process (by pid and uid, from SO_PEERCRED) may not use the channel at
  /// all, or nil when it may. The supervisor refuses its own plugins here, whatever their uid.
  public var peerRefusal: (@Sendable (_ pid: Int32, _ uid: UInt32) -> String?)?

  public init() {}

  public var methods: [String] { handlers.keys.sorted() }

  public mutating func register<Params, Result>(
    _ method: ControlMethod<Params, Result>,
    _ body: @escaping @Sendable (Params) async throws -> Result
  ) {
    handlers[method.name] = { request in
      let params: Params
      do {
        params = try ControlCoding.decodeParams(Params.self, from: request)
      } catch {
        return .failure(ControlError(.invalid, "invalid params for \(method.name): \(ControlCoding.explain(error))"))
      }
      do {
        return .success(try ControlCoding.encoder.encode(try await body(params)))
      } catch let error as ControlError {
        return .failure(error)
      } catch {
        return .failure(ControlError(.internal, "\(method.name) failed unexpectedly: \(error); the supervisor's log has details"))
      }
    }
  }

  /// Answers one request line with one response line (nil for a notification).
  func respond(to line: Data) async -> Data? {
    let head: JSONRPCRequestHead
    do {
      head = try ControlCoding.decoder.decode(JSONRPCRequestHead.self, from: line)
    } catch {
      return ControlCoding.errorResponse(
        id: .null,
        JSONRPCErrorObject(code: JSONRPCErrorCode.parseError, message: "parse error: the request is not a JSON object (\(ControlCoding.explain(error)))", data: nil)
      )
    }
    let id = head.id ?? .null
    guard head.jsonrpc == "2.0", let method = head.method else {
      return ControlCoding.errorResponse(
        id: id,
        JSONRPCErrorObject(code: JSONRPCErrorCode.invalidRequest, message: "invalid request: expected {\"jsonrpc\":\"2.0\",\"id\":…,\"method\":\"…\",\"params\":{…}}", data: nil)
      )
    }
    guard let handler = handlers[method] else {
      return ControlCoding.errorResponse(
        id: id,
        JSONRPCErrorObject(
          code: JSONRPCErrorCode.methodNotFound,
          message: "method not found: '\(method)'; known methods: \(methods.joined(separator: ", "))", data: nil)
      )
    }
    let result = await handler(line)
    guard head.hasID else { return nil }  // a notification gets no answer
    switch result {
    case .success(let resultJSON):
      return ControlCoding.successResponse(id: id, resultJSON: resultJSON)
    case .failure(let error):
      return ControlCoding.errorResponse(id: id, error.errorObject)
    }
  }
}

/// JSON encoding shared by server and client.
enum ControlCoding {
  static let encoder: JSONEncoder = {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return encoder
  }()
  static let decoder = JSONDecoder()

  private struct OptionalParams<Params: Decodable>: Decodable {
    var params: Params?
  }

  static func decodeParams<Params: Decodable>(_ type: Params.Type, from request: Data) throws -> Params {
    if let params = try decoder.decode(OptionalParams<Params>.self, from: request).params {
      return params
    }
    // Absent or null params read as an empty object, so `supervisor.status` needs none.
    return try decoder.decode(Params.self, from: Data("{}".utf8))
  }

  static func successResponse(id: JSONRPCID, resultJSON: Data) -> Data {
    var out = Data("{\"jsonrpc\":\"2.0\",\"id\":".utf8)
    out.append((try? encoder.encode(id)) ?? Data("null".utf8))
    out.append(contentsOf: Array(",\"result\":".utf8))
    out.append(resultJSON)
    out.append(UInt8(ascii: "}"))
    return out
  }

  static func errorResponse(id: JSONRPCID, _ error: JSONRPCErrorObject) -> Data {
    let response = JSONRPCResponse<JSONValue>(id: id, result: nil, error: error)
    return (try? encoder.encode(response)) ?? Data("{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"internal error\"}}".utf8)
  }

  /// A decoding error as one readable sentence: which field, what was wrong.
  static func explain(_ error: any Error) -> String {
    guard let error = error as? DecodingError else { return "\(error)" }
    func path(_ codingPath: [any CodingKey]) -> String {
      let keys = codingPath.filter { $0.stringValue != "params" }.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
      return keys.isEmpty ? "params" : keys.joined(separator: ".")
    }
    switch error {
    case .keyNotFound(let key, let context):
      return "missing field '\(path(context.codingPath + [key]))'"
    case .typeMismatch(let type, let context):
      return "field '\(path(context.codingPath))' must be \(describe(type))"
    case .valueNotFound(let type, let context):
      return "field '\(path(context.codingPath))' must be \(describe(type)), not null"
    case .dataCorrupted(let context):
      return context.codingPath.isEmpty ? context.debugDescription : "field '\(path(context.codingPath))': \(context.debugDescription)"
    @unknown default:
      return "\(error)"
    }
  }

  private static func describe(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: "a string"
    case is Int.Type, is Double.Type: "a number"
    case is Bool.Type: "a boolean"
    default: "\(type)".contains("Dictionary") ? "an object" : "\(type)"
    }
  }
}
