import Foundation
import HTTPTypes
import Hummingbird

/// jank-api without a token (developer mode, loopback only) answers only what a local
/// program sends, never what a web page in the operator's browser can make it send:
///
/// - `Host` must be a loopback address or `localhost`: a page on a DNS name rebound to
///   127.0.0.1 sends its own name, and must not read the answers (DNS rebinding);
/// - an `Origin`, when sent, must be a loopback origin too (a cross-site `fetch`);
/// - a POST must say `Content-Type: application/json`: a cross-site form or a "simple"
///   `fetch` can only send `text/plain`, form or multipart bodies without a preflight (CSRF).
///
/// With a token none of this is needed: a browser never adds `Authorization` by itself.
struct LocalOnlyMiddleware: RouterMiddleware {
  /// Each path's one method: a POST to a GET route is a 405, not a question of its body.
  let routes: [String: HTTPRequest.Method]

  func handle(_ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response) async throws -> Response {
    if let authority = request.head.authority, !Self.isLoopbackAuthority(authority) {
      throw APIError(
        status: .forbidden, code: -32014, kind: "forbidden",
        message: "the request is addressed to '\(authority.prefix(100))', not to a loopback address; without a token jank-api answers only requests for 127.0.0.1, [::1] or localhost (start it with a token to serve other names)")
    }
    if let origin = request.headers[.origin], !Self.isLoopbackOrigin(origin) {
      throw APIError(
        status: .forbidden, code: -32014, kind: "forbidden",
        message: "cross-origin request from '\(origin.prefix(100))' refused; without a token jank-api answers only local programs, not web pages")
    }
    if request.method == .post, routes[request.uri.path] == .post, !Self.isJSON(request.headers[.contentType]) {
      throw APIError(
        status: .unsupportedMediaType, code: -32015, kind: "unsupported_media_type",
        message: "send the body as JSON with `Content-Type: application/json` (got \(request.headers[.contentType].map { "'\($0.prefix(100))'" } ?? "none"))")
    }
    return try await next(request, context)
  }

  /// `host`, `host:port`, `[v6]` or `[v6]:port`, with a loopback host.
  static func isLoopbackAuthority(_ authority: String) -> Bool {
    var host = Substring(authority)
    if host.hasPrefix("[") {
      guard let close = host.firstIndex(of: "]") else { return false }
      let rest = host[host.index(after: close)...]
      guard rest.isEmpty || (rest.hasPrefix(":") && rest.dropFirst().allSatisfy(\.isNumber)) else { return false }
      host = host[host.index(after: host.startIndex)..<close]
    } else if let colon = host.lastIndex(of: ":") {
      guard host[host.index(after: colon)...].allSatisfy(\.isNumber) else { return false }
      host = host[..<colon]
    }
    return APIConfiguration.isLoopbackHost(String(host))
  }

  /// `http://` or `https://` and a loopback authority; `null` (a sandboxed page) is not.
  static func isLoopbackOrigin(_ origin: String) -> Bool {
    for scheme in ["http://", "https://"] where origin.lowercased().hasPrefix(scheme) {
      return isLoopbackAuthority(String(origin.dropFirst(scheme.count)))
    }
    return false
  }

  static func isJSON(_ contentType: String?) -> Bool {
    guard let contentType else { return false }
    let mediaType = contentType.split(separator: ";", maxSplits: 1).first?.trimmingCharacters(in: .whitespaces).lowercased()
    return mediaType == "application/json"
  }
}
