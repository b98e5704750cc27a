import CJankShim
import Foundation
import Glibc
import JankControl
import JankFrame
import JankJSON
import JankProtocol
import NIOCore
import Synchronization
import Testing

@testable import JankSupervisorCore

/// Malformed jank-frame answers thrown at the supervisor's plugin client by a fake plugin on
/// a real Unix socket: every call ends, within its deadline, with a result or a typed error;
/// the client never crashes or hangs.
@Suite struct FrameFuzzSupervisorTests {
  /// Answers health checks properly and every execute with `reply(request)` (raw bytes),
  /// closing the connection afterwards when `close` says so.
  final class FakePlugin: @unchecked Sendable {
    let path: String
    private let listener: Int32

    init(_ workspace: Workspace, reply: @escaping @Sendable (Frame) -> (bytes: [UInt8], close: Bool)) throws {
      let path = workspace.state + "/fake-\(UInt32.random(in: 0 ... .max)).sock"
      let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
      var address = sockaddr_un()
      address.sun_family = sa_family_t(AF_UNIX)
      withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
      let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
      }
      guard bound == 0, listen(listener, 8) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
      self.path = path
      self.listener = listener
      Thread.detachNewThread {
        while true {
          // Close-on-exec: a child that any test spawns meanwhile must not hold the
          // connection open after this fake closes it (the client would never see the close).
          let fd = jank_accept_cloexec(listener)
          if fd < 0, errno == EINTR { continue }
          guard fd >= 0 else {
            // Shut down by deinit. Only this thread closes the listener: closed elsewhere
            // between two accepts, the next accept would take another socket's connections.
            close(listener)
            return
          }
          Thread.detachNewThread { Self.serve(fd, reply: reply) }
        }
      }
    }

    private static func serve(_ fd: Int32, reply: @Sendable (Frame) -> (bytes: [UInt8], close: Bool)) {
      defer { close(fd) }
      var decoder = FrameDecoder(maxPayloadLength: .max)
      var buffer = ByteBuffer()
      var chunk = [UInt8](repeating: 0, count: 65_536)
      while true {
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return }
        buffer.writeBytes(chunk[0..<n])
        while case .frame(let frame)? = try? decoder.next(from: &buffer) {
          var answer: (bytes: [UInt8], close: Bool)
          switch frame.type {
          case .healthCheck:
            var health = Plugin_HealthCheckResponse()
            health.status = "healthy"
            answer = ((try! Frame.message(.healthCheckResult, id: frame.id, health)).bytes, false)
          case .execute: answer = reply(frame)
          default: continue
          }
          _ = answer.bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
          if answer.close { return }
        }
      }
    }

    func connect() async throws -> FramePluginConnection {
      try await FramePluginConnection.connect(
        handshake: HandshakeLine(network: "unix", address: path, protocol: "jank-frame"), deadline: .now + .seconds(5), maxPayloadLength: 1024)
    }

    deinit {
      shutdown(listener, Int32(SHUT_RDWR))  // the accept thread wakes and closes it
      unlink(path)
    }
  }

  /// Runs one call with `deadline` (300 ms unless said); fails the test if it takes much longer.
  static func call(_ connection: FramePluginConnection, args: [String: JSONValue] = ["a": 1], deadline: Duration = .milliseconds(300)) async -> Result<[String: JSONValue], any Error> {
    let begin = ContinuousClock.now
    let result: Result<[String: JSONValue], any Error>
    do {
      result = .success(try await connection.execute(method: "m", args: args, timeout: deadline))
    } catch {
      result = .failure(error)
    }
    // Product bound: the call's deadline, whatever the peer answers.
    #expect(ContinuousClock.now - begin < deadline + .milliseconds(2700), "a call outlived its deadline")
    return result
  }

  static func kind(_ result: Result<[String: JSONValue], any Error>) -> String {
    switch result {
    case .success: "ok"
    case .failure(let error as ControlError): error.kind.rawValue
    case .failure(let error as UndeliveredCall): "undelivered:" + error.error.kind.rawValue
    case .failure(let error): "other: \(error)"
    }
  }

  /// One way for a plugin to answer an execute call, and the outcomes the first call may have.
  enum Scenario: String, CaseIterable, Sendable {
    case valid, pluginError, wrongID, unknownType, undecodableResult, emptyErrorFrame, lengthUnderTheHeader
    case truncatedThenClosed, closedMidCall, answerOverTheMaximum, headerAnnouncing4GiB, garbageAfterAValidAnswer

    func reply(to request: Frame) -> (bytes: [UInt8], close: Bool) {
      switch self {
      case .valid: (executeResult(request, ["ok": true]), false)
      case .pluginError: (FrameErrorPayload(code: .pluginError, message: "boom").frame(id: request.id).bytes, false)
      case .wrongID: (executeResult(Frame(type: .execute, id: request.id &+ 1000), [:]), false)
      case .unknownType: (Frame(type: FrameType(rawValue: 0x42), id: request.id).bytes, false)
      case .undecodableResult: (Frame(type: .executeResult, id: request.id, payload: ByteBuffer(bytes: [0xFF, 0xFF])).bytes, false)
      case .emptyErrorFrame: (Frame(type: .error, id: request.id).bytes, false)
      case .lengthUnderTheHeader: ([0, 0, 0, 2, 9, 9], false)
      case .truncatedThenClosed: (Array(executeResult(request, ["x": 1]).prefix(10)), true)
      case .closedMidCall: ([], true)
      case .answerOverTheMaximum: (executeResult(request, ["blob": .string(String(repeating: "y", count: 5000))]), false)
      case .headerAnnouncing4GiB: ([0xFF, 0xFF, 0xFF, 0xFF, 2] + withUnsafeBytes(of: request.id.bigEndian) { Array($0) }, false)
      case .garbageAfterAValidAnswer: (executeResult(request, ["ok": true]) + [0, 0, 0, 0x0A, 0x77, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0xEE], false)
      }
    }

    var expected: Set<String> {
      switch self {
      case .valid, .garbageAfterAValidAnswer: ["ok"]
      case .pluginError, .unknownType, .undecodableResult, .emptyErrorFrame: ["plugin_error"]
      case .wrongID: ["timeout"]
      case .lengthUnderTheHeader, .truncatedThenClosed, .closedMidCall: ["unavailable"]
      case .answerOverTheMaximum: ["too_large"]
      case .headerAnnouncing4GiB: ["too_large", "timeout"]
      }
    }

    /// The first call's deadline. Where the fake plugin answers, the deadline must not be
    /// what ends the call, and the fake is a thread of this loaded test process: with 300 ms
    /// it once answered a truncated frame and closed after the deadline (a test assumption,
    /// not a product bound). Where no answer ever comes, the deadline is what is tested.
    var deadline: Duration { expected.contains("timeout") ? .milliseconds(300) : .seconds(5) }
  }

  @Test(arguments: Scenario.allCases)
  func malformedAnswersFailTheCallAndNeverHang(_ scenario: Scenario) async throws {
    let workspace = try Workspace()
    let fake = try FakePlugin(workspace) { scenario.reply(to: $0) }
    let connection = try await fake.connect()
    let first = Self.kind(await Self.call(connection, deadline: scenario.deadline))
    #expect(scenario.expected.contains(first), "got \(first), expected one of \(scenario.expected)")
    // The next call on the same connection also ends: a result, a typed error, or
    // "undelivered" when the connection was closed.
    let second = Self.kind(await Self.call(connection))
    #expect(!second.hasPrefix("other"), "second call got \(second)")
    connection.close()
  }

  @Test func aRequestOverTheMaximumIsRefusedAndTheConnectionKept() async throws {
    let workspace = try Workspace()
    let fake = try FakePlugin(workspace) { (executeResult($0, ["ok": true]), false) }
    let connection = try await fake.connect()
    let big = await Self.call(connection, args: ["blob": .string(String(repeating: "z", count: 4096))])
    #expect(Self.kind(big) == "too_large")
    #expect(Self.kind(await Self.call(connection, deadline: .seconds(5))) == "ok")
    connection.close()
  }

  @Test func randomAnswersNeverCrashOrHangTheClient() async throws {
    let workspace = try Workspace()
    let seed = Mutex(SeededRandom(seed: 0x6672_616D))
    let fake = try FakePlugin(workspace) { request in
      seed.withLock { random in
        var bytes = executeResult(request, ["n": 1])
        switch Int.random(in: 0..<3, using: &random) {
        case 0: bytes = (0..<Int.random(in: 1...64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
        case 1: for _ in 0..<2 { bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random) }
        default: bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &random)))
        }
        return (bytes, Bool.random(using: &random))
      }
    }
    var kinds: [String: Int] = [:]
    for _ in 0..<60 {
      let connection = try await fake.connect()
      for _ in 0..<2 {
        let kind = Self.kind(await Self.call(connection))
        #expect(!kind.hasPrefix("other"), "\(kind)")
        kinds[kind, default: 0] += 1
      }
      connection.close()
    }
    print("frame fuzz (supervisor end): 120 calls over 60 connections: \(kinds.sorted { $0.key < $1.key })")
  }
}

/// An execute-result frame answering `request` with `data`, as bytes.
private func executeResult(_ request: Frame, _ data: [String: JSONValue]) -> [UInt8] {
  var response = Plugin_ExecuteResponse()
  response.data = AnyMap.pack(data)
  return (try! Frame.message(.executeResult, id: request.id, response)).bytes
}
