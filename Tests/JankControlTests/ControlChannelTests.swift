import Foundation
import JankControl
import JankJSON
import Logging
import Synchronization
import Testing

/// A raw line-oriented Unix socket client, to send what the typed client never would.
final class RawLineClient: @unchecked Sendable {
  let fd: Int32
  private var pending = Data()

  init(path: String) throws {
    fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
    let rc = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard rc == 0 else { throw POSIXError(.ECONNREFUSED) }
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
  }

  deinit { close(fd) }

  func send(_ text: String) {
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
      let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
      guard n > 0 else { return }
      offset += n
    }
  }

  /// The next line as a JSON object, or nil at EOF / timeout. The blocking read runs on its
  /// own thread: blocking a concurrency-pool thread would starve the server under test.
  func readLine() async -> [String: JSONValue]? {
    await withCheckedContinuation { continuation in
      Thread { continuation.resume(returning: self.readLineBlocking()) }.start()
    }
  }

  private func readLineBlocking() -> [String: JSONValue]? {
    while true {
      if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
        let line = pending[pending.startIndex..<newline]
        pending = Data(pending[(newline + 1)...])
        return (try? JSONDecoder().decode(JSONValue.self, from: line))?.objectValue
      }
      var buffer = [UInt8](repeating: 0, count: 65536)
      let n = read(fd, &buffer, buffer.count)
      guard n > 0 else { return nil }
      pending.append(contentsOf: buffer[0..<n])
    }
  }
}

/// `object[k1][k2]…` (a plain function: optional chains inside #expect confuse the macro).
func field(_ object: [String: JSONValue]?, _ keys: String...) -> JSONValue? {
  var value: JSONValue? = object.map(JSONValue.object)
  for key in keys { value = value?.objectValue?[key] }
  return value
}

struct EchoParams: Codable, Sendable { var text: String; var delayMs: Int? }
struct EchoResult: Codable, Sendable, Equatable { var text: String }

enum TestMethods {
  static let echo = ControlMethod<EchoParams, EchoResult>("test.echo")
  static let fail = ControlMethod<NoParams, EchoResult>("test.fail")
  /// Answers 256 KiB, and counts how many times it was made.
  static let big = ControlMethod<NoParams, EchoResult>("test.big")
}

/// What the test server's methods did, for tests that look behind the answers.
final class TestServerProbe: Sendable {
  let bigAnswersMade = Mutex(0)
  /// While set, every connection is refused (as the supervisor refuses a plugin's).
  let refusing = Mutex(false)
}

/// A control server with a few test methods on a fresh socket.
func withControlServer(probe: TestServerProbe = TestServerProbe(), _ body: (String) async throws -> Void) async throws {
  let directory = "/tmp/jank-ctl-\(UUID().uuidString.prefix(8))"
  try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
  defer { try? FileManager.default.removeItem(atPath: directory) }
  let path = directory + "/control.sock"
  var router = ControlRouter()
  router.register(TestMethods.echo) { params in
    if let delay = params.delayMs { try await Task.sleep(for: .milliseconds(delay)) }
    return EchoResult(text: params.text)
  }
  router.register(TestMethods.fail) { _ in
    throw ControlError(.notFound, "nothing here; try something else", details: ["id": "x"])
  }
  router.register(TestMethods.big) { _ in
    probe.bigAnswersMade.withLock { $0 += 1 }
    return EchoResult(text: String(repeating: "b", count: 256 << 10))
  }
  router.peerRefusal = { _, _ in probe.refusing.withLock { $0 } ? "refused: this test refuses everyone for now" : nil }
  var limits = ControlServerLimits()
  limits.maximumLineLength = 4096
  limits.maximumConnections = 64
  limits.maximumInFlight = 16
  limits.partialLineTimeout = .milliseconds(500)
  let server = try await ControlServer.bind(path: path, router: router, limits: limits, logger: Logger(label: "test"))
  let serving = Task { await server.run() }
  defer { serving.cancel() }
  try await body(path)
}

@Suite struct ControlChannelTests {
  @Test func typedCallsRoundTrip() async throws {
    try await withControlServer { path in
      let client = try await ControlClient.connect(path: path)
      #expect(try await client.call(TestMethods.echo, EchoParams(text: "hi")) == EchoResult(text: "hi"))
      await client.close()
    }
  }

  @Test func applicationErrorsCarryKindMessageAndDetails() async throws {
    try await withControlServer { path in
      let client = try await ControlClient.connect(path: path)
      await #expect(throws: ControlError(.notFound, "nothing here; try something else", details: ["id": "x"])) {
        try await client.call(TestMethods.fail, NoParams())
      }
      await client.close()
    }
  }

  @Test func pipelinedRequestsAreAnsweredByIDAsTheyFinish() async throws {
    try await withControlServer { path in
      let raw = try RawLineClient(path: path)
      raw.send(#"{"jsonrpc":"2.0","id":1,"method":"test.echo","params":{"text":"slow","delayMs":300}}"# + "\n"
        + #"{"jsonrpc":"2.0","id":"two","method":"test.echo","params":{"text":"fast"}}"# + "\n")
      let first = await raw.readLine()
      let second = await raw.readLine()
      #expect(field(first, "id") == "two")
      #expect(field(first, "result", "text") == "fast")
      #expect(field(second, "id") == 1)
      #expect(field(second, "result", "text") == "slow")
    }
  }

  @Test func malformedRequestsGetStandardErrorsAndTheConnectionSurvives() async throws {
    try await withControlServer { path in
      let raw = try RawLineClient(path: path)
      raw.send("{not json\n")
      #expect(field(await raw.readLine(), "error", "code") == -32700)
      raw.send(#"{"id":5,"method":"test.echo"}"# + "\n")
      #expect(field(await raw.readLine(), "error", "code") == -32600)
      raw.send(#"{"jsonrpc":"2.0","id":6,"method":"no.such"}"# + "\n")
      let unknown = await raw.readLine()
      #expect(field(unknown, "error", "code") == -32601)
      #expect(field(unknown, "error", "message")?.stringValue?.contains("test.echo") == true)
      raw.send(#"{"jsonrpc":"2.0","id":7,"method":"test.echo","params":{"text":42}}"# + "\n")
      let bad = await raw.readLine()
      #expect(field(bad, "error", "code") == -32602)
      #expect(field(bad, "error", "message")?.stringValue?.contains("text") == true)
      raw.send(#"{"jsonrpc":"2.0","id":8,"method":"test.echo"}"# + "\n")
      #expect(field(await raw.readLine(), "error", "code") == -32602)
      raw.send(String(repeating: "x", count: 10_000) + "\n")
      #expect(field(await raw.readLine(), "error", "data", "kind") == "too_large")
      // A notification gets no answer; the next request still does.
      raw.send(#"{"jsonrpc":"2.0","method":"test.echo","params":{"text":"n"}}"# + "\n")
      raw.send(#"{"jsonrpc":"2.0","id":9,"method":"test.echo","params":{"text":"still here"}}"# + "\n")
      let last = await raw.readLine()
      #expect(field(last, "id") == 9)
      #expect(field(last, "result", "text") == "still here")
    }
  }

  @Test func oneClientsGarbageDoesNotDisturbAnother() async throws {
    try await withControlServer { path in
      let client = try await ControlClient.connect(path: path)
      let raw = try RawLineClient(path: path)
      raw.send("\u{0}\u{1}garbage\n{]\n")
      #expect(try await client.call(TestMethods.echo, EchoParams(text: "ok")).text == "ok")
      await client.close()
    }
  }

  @Test func manyConcurrentCallsOnOneConnection() async throws {
    try await withControlServer { path in
      let client = try await ControlClient.connect(path: path)
      try await withThrowingTaskGroup(of: Void.self) { group in
        for i in 0..<200 {
          group.addTask {
            let result = try await client.call(TestMethods.echo, EchoParams(text: "\(i)", delayMs: i % 7))
            #expect(result.text == "\(i)")
          }
        }
        try await group.waitForAll()
      }
      await client.close()
    }
  }

  @Test func socketIsGroupReadableOnlyAndALiveSocketIsNotStolen() async throws {
    try await withControlServer { path in
      var info = stat()
      #expect(stat(path, &info) == 0)
      #expect(info.st_mode & 0o777 == 0o660)
      await #expect(throws: ControlError.self) {
        _ = try await ControlServer.bind(path: path, router: ControlRouter(), logger: Logger(label: "test"))
      }
    }
  }

  @Test func unreachableSupervisorIsReportedAsSuch() async throws {
    do {
      _ = try await ControlClient.connect(path: "/tmp/jank-no-such-\(getpid()).sock")
      Issue.record("connect should fail")
    } catch let error as ControlError {
      #expect(error.kind == .unavailable)
      #expect(error.details["unreachable"] == true)
      #expect(error.message.contains("start it"))
    }
  }
}
