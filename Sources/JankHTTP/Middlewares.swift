import Foundation
import HTTPTypes
import Hummingbird
import JankControl
import NIOCore
import Synchronization

extension HTTPField.Name {
  static let requestID = HTTPField.Name("X-Request-ID")!
}

/// Takes the caller's `X-Request-ID` (when it is a sane token) or makes one, and echoes it.
struct RequestIDMiddleware: RouterMiddleware {
  func handle(_ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response) async throws -> Response {
    var context = context
    context.requestID = Self.accepted(request.headers[.requestID]) ?? UUID().uuidString.lowercased()
    var response = try await next(request, context)
    response.headers[.requestID] = context.requestID
    return response
  }

  /// Up to 128 visible ASCII characters; anything else is replaced, never echoed.
  static func accepted(_ value: String?) -> String? {
    guard let value, !value.isEmpty, value.utf8.count <= 128, value.utf8.allSatisfy({ $0 > 32 && $0 < 127 }) else { return nil }
    return value
  }
}

/// Turns every failure into the envelope with its status: the API's own errors, the
/// router's 404 (or 405 when the path exists with another method), an oversized body; and
/// anything unexpected into a 500 that still says what happened.
struct EnvelopeErrorMiddleware: RouterMiddleware {
  let routes: [String: HTTPRequest.Method]
  let bodyLimit: Int

  func handle(_ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response) async throws -> Response {
    do {
      return try await next(request, context)
    } catch let error as APIError {
      return Envelope.failure(error, requestID: context.requestID)
    } catch let error as ControlError {
      return Envelope.failure(APIError(error), requestID: context.requestID)
    } catch is NIOTooManyBytesError {
      return Envelope.failure(.tooLarge(limit: bodyLimit), requestID: context.requestID)
    } catch let error as HTTPError where error.status == .notFound {
      let path = request.uri.path
      if let allowed = routes[path], allowed != request.method {
        return Envelope.failure(.methodNotAllowed(request.method, path: path, allowed: allowed), requestID: context.requestID)
      }
      return Envelope.failure(.routeNotFound(path), requestID: context.requestID)
    } catch let error as HTTPError {
      let failure = APIError(status: error.status, code: -32013, kind: "http", message: error.body ?? error.status.reasonPhrase)
      return Envelope.failure(failure, requestID: context.requestID)
    } catch {
      context.logger.error("request failed", metadata: ["request_id": "\(context.requestID)", "error": "\(error)"])
      let failure = APIError(ControlError(.internal, "jank-api failed on this request (\(error)); this is a bug, please report it with the request id"))
      return Envelope.failure(failure, requestID: context.requestID)
    }
  }
}

/// Bearer token on every route but `/api/health`, compared in constant time.
struct BearerTokenMiddleware: RouterMiddleware {
  let token: [UInt8]
  let openPaths: Set<String>

  func handle(_ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response) async throws -> Response {
    if openPaths.contains(request.uri.path) {
      var context = context
      context.hasValidToken = request.headers[.authorization].flatMap(Self.bearerCredentials).map { Self.constantTimeEqual($0, token) } ?? false
      return try await next(request, context)
    }
    guard let header = request.headers[.authorization] else {
      throw APIError.unauthorized("this API needs a token: send `Authorization: Bearer <token>` (the token jank-api was started with)")
    }
    guard let presented = Self.bearerCredentials(header) else {
      throw APIError.unauthorized("this API takes a bearer token: send `Authorization: Bearer <token>` (the token jank-api was started with)")
    }
    guard Self.constantTimeEqual(presented, token) else {
      throw APIError.unauthorized("the bearer token is wrong; send the token jank-api was started with (JANK_API_TOKEN or --token-file)")
    }
    return try await next(request, context)
  }

  /// The credentials of `Bearer <token>`: the scheme is case-insensitive (RFC 7235 §2.1),
  /// one or more spaces follow it, trailing white space is not part of the token (a token68
  /// has none). Nil for any other scheme.
  static func bearerCredentials(_ header: String) -> [UInt8]? {
    let bytes = Array(header.utf8)
    let scheme = Array("bearer".utf8)
    guard bytes.count > scheme.count, bytes[scheme.count] == UInt8(ascii: " "),
      zip(bytes, scheme).allSatisfy({ $0 | 0x20 == $1 })
    else { return nil }
    let isSpace = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
    var credentials = bytes[scheme.count...].drop(while: isSpace)
    while let last = credentials.last, isSpace(last) { credentials.removeLast() }
    return Array(credentials)
  }

  /// Time depends only on the length of the presented token, never on where it differs.
  static func constantTimeEqual(_ presented: [UInt8], _ expected: [UInt8]) -> Bool {
    var difference = UInt(bitPattern: presented.count ^ expected.count)
    for i in 0..<presented.count {
      difference |= UInt(presented[i] ^ expected[i % max(expected.count, 1)])
    }
    return difference == 0 && !expected.isEmpty
  }
}
