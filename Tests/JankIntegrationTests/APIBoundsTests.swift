import Foundation
import JankJSON
import Testing

/// What one HTTP client may cost jank-api: a connection that sends nothing, a request
/// whose body stalls, more connections than the limit, a call the supervisor is slow to
/// answer. Each ends at jank-api's own bound, and other clients are served meanwhile.
@Suite struct APIBoundsTests {
  @Test func anIdleConnectionAndAStalledBodyAreClosedAtTheirTimeouts() async throws {
    try await APITests.withStack(apiArguments: ["--idle-timeout", "1", "--read-timeout", "1"]) { _, _, api in
      let idle = try TCPConnection(port: api.port)
      let partialHead = try TCPConnection(port: api.port)
      partialHead.send("GET /api/plugin/list HTTP/1.1\r\nHost: 127.0.0.1\r\n")
      let stalledBody = try TCPConnection(port: api.port)
      stalledBody.send("POST /api/plugin/execute HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":")
      // Product bounds: --idle-timeout 1 s (no request, or a head that never ends) and
      // --read-timeout 1 s (a body that stops); 5 s leaves room for a loaded machine.
      for (name, connection) in [("idle", idle), ("partial head", partialHead), ("stalled body", stalledBody)] {
        let begin = ContinuousClock.now
        let end = await connection.waitForClose(within: .seconds(5))
        #expect(end, "the \(name) connection was still open after 5 s")
        #expect(ContinuousClock.now - begin < .seconds(5))
      }
      #expect(try await http("GET", api.port, "/api/plugin/list").status == 200)
    }
  }

  @Test func pastTheConnectionLimitNewConnectionsWaitForAFreeOne() async throws {
    try await APITests.withStack(apiArguments: ["--max-connections", "3"]) { _, _, api in
      var held = try (0..<3).map { _ in try TCPConnection(port: api.port) }
      // Each is accepted (and counted) once it answered a request on a kept-alive connection.
      for connection in held {
        connection.send("GET /api/plugin/list HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        #expect(await connection.readsSomething(within: .seconds(5)))
      }
      let waiting = Task { try await http("GET", api.port, "/api/plugin/list") }
      try await Task.sleep(for: .milliseconds(500))
      held.removeLast().close()
      // Product bound: none; the request waited in the backlog and is served once one closes.
      let answer = try await waiting.value
      #expect(answer.status == 200)
      for connection in held { connection.close() }
    }
  }

  @Test func aCallTheSupervisorAnswersTooLateIs504AtTheCallTimeout() async throws {
    try await APITests.withStack(apiArguments: ["--call-timeout", "1"]) { workspace, _, api in
      let id = try workspace.addPlugin("slow", script: "FAULT_SLOW_START_MS=4000 exec '\(Binaries.faultPlugin)'", extra: #","start_timeout_ms":20000"#)
      let begin = ContinuousClock.now
      let answer = try await http("POST", api.port, "/api/plugin/register", json: ["id": .string(id)])
      // Product bound: --call-timeout 1 s; the register itself goes on in the supervisor.
      #expect(answer.status == 504, "\(answer.text)")
      #expect(answer.json?["msg"]?.stringValue?.contains("no answer from the supervisor") == true, "\(answer.text)")
      #expect(ContinuousClock.now - begin < .seconds(3))
      #expect(try await http("GET", api.port, "/api/plugin/list").status == 200)
    }
  }
}

/// A raw TCP connection to 127.0.0.1 that the test keeps open as long as it likes.
final class TCPConnection: @unchecked Sendable {
  let fd: Int32

  init(port: Int) throws {
    fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
      let code = errno
      Glibc.close(fd)
      throw APITestError("connect to 127.0.0.1:\(port): errno \(code)")
    }
  }

  func send(_ text: String) {
    _ = text.withCString { Glibc.send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
  }

  /// Whether the server closed the connection (EOF or reset) within `timeout`; reads and
  /// drops whatever it sent before.
  func waitForClose(within timeout: Duration) async -> Bool {
    await read(until: timeout) { n in n <= 0 }
  }

  /// Whether at least one byte arrived within `timeout`.
  func readsSomething(within timeout: Duration) async -> Bool {
    await read(until: timeout) { n in n > 0 }
  }

  private func read(until timeout: Duration, done: @escaping @Sendable (Int) -> Bool) async -> Bool {
    let fd = self.fd
    return await withCheckedContinuation { continuation in
      Thread {
        let deadline = ContinuousClock.now + timeout
        var buffer = [UInt8](repeating: 0, count: 4096)
        var poller = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
        while ContinuousClock.now < deadline {
          guard poll(&poller, 1, 50) > 0 else { continue }
          let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
          if n < 0, errno == EINTR || errno == EAGAIN { continue }
          if done(n) { return continuation.resume(returning: true) }
          if n <= 0 { break }
        }
        continuation.resume(returning: false)
      }.start()
    }
  }

  private var open = true
  func close() {
    if open { Glibc.close(fd) }
    open = false
  }
  deinit { close() }
}
