import Foundation
import JankJSON
import Testing

/// jank-api without a token answers local programs only: not a page on a rebound DNS name
/// (Host), not a cross-site page (Origin), not a form or text/plain POST (CSRF).
@Suite struct APILocalOnlyTests {
  static let stop: JSONValue = ["id": .string(APITests.hello)]

  @Test func withoutATokenOnlyLoopbackHostsAndOriginsAndJSONBodiesAreServed() async throws {
    try await APITests.withStack { _, _, api in
      let port = api.port
      for host in ["127.0.0.1:\(port)", "localhost:\(port)", "LOCALHOST", "[::1]:\(port)", "127.0.0.2"] {
        let answer = try await http("GET", port, "/api/plugin/list", headers: ["Host": host])
        #expect(answer.status == 200, "Host \(host): \(answer.text)")
      }
      for host in ["evil.example", "evil.example:\(port)", "127.0.0.1.evil.example", "127.0.0.1:80@evil.example", "[::2]:\(port)"] {
        let answer = try await http("GET", port, "/api/health", headers: ["Host": host])
        #expect(answer.status == 403, "Host \(host): \(answer.text)")
        #expect(answer.json?["data"]?["kind"] == "forbidden", "Host \(host)")
        #expect(answer.json?["msg"]?.stringValue?.contains("loopback") == true, "Host \(host)")
        #expect(!answer.text.contains("socket"), "a refused request learns nothing: \(answer.text)")
      }

      let local = try await http("GET", port, "/api/plugin/list", headers: ["Origin": "http://localhost:3000"])
      #expect(local.status == 200, "\(local.text)")
      for origin in ["https://evil.example", "null", "http://127.0.0.1.evil.example"] {
        let answer = try await http("POST", port, "/api/plugin/stop", json: Self.stop, headers: ["Origin": origin])
        #expect(answer.status == 403, "Origin \(origin): \(answer.text)")
        #expect(answer.json?["msg"]?.stringValue?.contains("cross-origin") == true, "Origin \(origin)")
      }

      let body = Data(Self.stop.description.utf8)
      for contentType in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""] {
        let answer = try await http("POST", port, "/api/plugin/stop", body: body, headers: contentType.isEmpty ? [:] : ["Content-Type": contentType])
        #expect(answer.status == 415, "Content-Type '\(contentType)': \(answer.text)")
        #expect(answer.json?["data"]?["kind"] == "unsupported_media_type")
      }
      // None of the refused requests reached the supervisor: the plugin was never stopped.
      let registered = try await http("POST", port, "/api/plugin/register", json: Self.stop, headers: ["Content-Type": "application/json; charset=utf-8"])
      #expect(registered.status == 200, "\(registered.text)")
      #expect(registered.json?["data"]?["status"] == "ready")
      let stopped = try await http("POST", port, "/api/plugin/stop", json: Self.stop)
      #expect(stopped.json?["data"]?["status"] == "stopped", "\(stopped.text)")
    }
  }

  @Test func withATokenAnyHostIsServedToWhoeverHasTheToken() async throws {
    let token = "s3cret-token-for-the-test-0123456789"
    try await APITests.withStack(environment: ["JANK_API_TOKEN": token]) { _, _, api in
      let answer = try await http("GET", api.port, "/api/plugin/list", headers: ["Host": "jank.internal.example", "Authorization": "Bearer \(token)"])
      #expect(answer.status == 200, "\(answer.text)")
      let without = try await http("GET", api.port, "/api/plugin/list", headers: ["Host": "jank.internal.example"])
      #expect(without.status == 401)
    }
  }
}
