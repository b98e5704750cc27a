import Foundation
import JankFrame
import JankJSON
import JankProtocol
import NIOCore
import Testing

/// Malformed jank-frame input thrown at a real Swift SDK plugin process: each connection
/// gets an error frame or is closed, the plugin never crashes or hangs, and a fresh
/// connection is served afterwards.
@Suite struct FrameFuzzPluginTests {
  /// The fault plugin started as a Jank host would, offered jank-frame.
  final class FramePlugin: @unchecked Sendable {
    let process: ChildProcess
    let socketPath: String

    init(_ workspace: Workspace) async throws {
      let stdout = try OutputPipe(path: Binaries.faultPlugin)
      process = try ChildProcess(Binaries.faultPlugin, [], environment: [
        "JANK_PLUGIN": "jank-plugin", "JANK_PLUGIN_PROTOCOLS": "jank-frame,grpc", "PLUGIN_PROTOCOL_VERSIONS": "1",
        "PLUGIN_UNIX_SOCKET_DIR": workspace.state, "SWIFT_BACKTRACE": "enable=no",
      ], stdout: .fd(stdout.write))
      stdout.closeWriteEnd()
      // The handshake line; the pipe then stays open (unread) for as long as the plugin runs.
      let line: String = await offPool {
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while read(stdout.read, &byte, 1) == 1, byte != 10 { bytes.append(byte) }
        return String(decoding: bytes, as: UTF8.self)
      }
      self.stdout = stdout
      let fields = line.split(separator: "|", omittingEmptySubsequences: false)
      guard fields.count >= 5, fields[4] == "jank-frame" else {
        process.terminate()
        throw FuzzError("the plugin did not answer jank-frame: '\(line)'")
      }
      socketPath = String(fields[3])
    }

    private let stdout: OutputPipe

    var isAlive: Bool { process.isRunning }
  }

  struct FuzzError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
  }

  static func health(id: UInt64) -> Frame { try! Frame.message(.healthCheck, id: id, Plugin_HealthCheckRequest()) }

  static func execute(id: UInt64, method: String, args: [String: JSONValue] = [:], timeoutMs: UInt32 = 5000) -> Frame {
    var request = Plugin_ExecuteRequest()
    request.method = method
    request.args = AnyMap.pack(args)
    return try! Frame.execute(id: id, timeoutMs: timeoutMs, request: request)
  }

  /// The connection still answers a health check after whatever came before.
  static func stillServes(_ socket: RawSocket, id: UInt64 = 99) async throws -> Bool {
    guard await socket.send(health(id: id).bytes) else { return false }
    let answer = try await socket.frames(1)
    return answer.frames.first?.id == id && answer.frames.first?.type == .healthCheckResult
  }

  /// Calls on one connection are multiplexed: a quick call sent after a slow one is answered
  /// first, and a cancel frame (not the call's own deadline, which is a minute away) ends the
  /// slow call's task in the plugin.
  @Test func callsAreAnsweredOutOfOrderAndACancelFrameReachesTheHandler() async throws {
    let workspace = try Workspace()
    let plugin = try await FramePlugin(workspace)
    let socket = try await RawSocket.connect(plugin.socketPath)
    let marker = workspace.root + "/cancelled"
    let started = workspace.root + "/started"
    let slow = Self.execute(id: 1, method: "sleep", args: ["ms": 60_000, "marker": .string(marker), "started_marker": .string(started)], timeoutMs: 60_000)
    await socket.send(slow.bytes + Self.execute(id: 2, method: "echo", args: ["n": 2]).bytes)
    var answer = try await socket.frames(1)
    #expect(answer.frames.map(\.id) == [2])
    #expect(answer.frames.first?.type == .executeResult)
    #expect(await eventually { FileManager.default.fileExists(atPath: started) })

    await socket.send(Frame(type: .cancel, id: 1).bytes)
    answer = try await socket.frames(1)
    #expect(answer.frames.first?.id == 1)
    #expect(answer.frames.first?.errorPayload?.code == .cancelled, "\(String(describing: answer.frames.first))")
    #expect(await eventually { (try? String(contentsOfFile: marker, encoding: .utf8))?.contains("cancelled") == true })
    #expect(try await Self.stillServes(socket))
    #expect(plugin.isAlive)
  }

  /// A call and a shutdown read from the socket in one go: the call was sent first, so the
  /// shutdown waits for it and it is answered (under load the supervisor's stop sequence sends
  /// Shutdown microseconds after a call; the plugin used to count the call only once its task
  /// first ran, and so refused it and exited at once).
  @Test func aCallReadTogetherWithTheShutdownBehindItIsAnswered() async throws {
    let workspace = try Workspace()
    let plugin = try await FramePlugin(workspace)
    let socket = try await RawSocket.connect(plugin.socketPath)
    await socket.send(Self.execute(id: 1, method: "sleep", args: ["ms": 300]).bytes + Frame(type: .shutdown, id: 2).bytes)
    let answer = try await socket.frames(2)
    #expect(Set(answer.frames.map(\.id)) == [1, 2])
    let call = answer.frames.first { $0.id == 1 }
    #expect(call?.type == .executeResult, "\(String(describing: call?.errorPayload))")
    #expect(await eventually(timeout: .seconds(5)) { !plugin.isAlive }, "the plugin did not exit after its shutdown")
  }

  @Test func errorsKeepTheConnectionAndFramingErrorsCloseIt() async throws {
    let workspace = try Workspace()
    let plugin = try await FramePlugin(workspace)

    // Unknown type: an invalid error for that id, and the connection keeps serving.
    var socket = try await RawSocket.connect(plugin.socketPath)
    await socket.send(Frame(type: FrameType(rawValue: 0x42), id: 7).bytes)
    var answer = try await socket.frames(1)
    #expect(answer.frames.first?.id == 7)
    #expect(answer.frames.first?.errorPayload?.code == .invalid)
    #expect(try await Self.stillServes(socket))

    // Undecodable execute payload: invalid, connection kept.
    await socket.send(Frame(type: .execute, id: 8, payload: ByteBuffer(bytes: [0, 0, 0, 1, 0xFF, 0xFF, 0xFF])).bytes)
    answer = try await socket.frames(1)
    #expect(answer.frames.first?.errorPayload?.code == .invalid)
    // A cancel for an id not in flight is ignored; a result-type frame sent to the plugin is invalid.
    await socket.send(Frame(type: .cancel, id: 12345).bytes)
    await socket.send(Frame(type: .executeResult, id: 9).bytes)
    answer = try await socket.frames(1)
    #expect(answer.frames.first?.id == 9)
    #expect(answer.frames.first?.errorPayload?.code == .invalid)
    #expect(try await Self.stillServes(socket))

    // Over the maximum: skipped unread, too_large for that id, connection kept.
    let big = Self.execute(id: 10, method: "echo", args: ["blob": .string(String(repeating: "x", count: Frame.defaultMaxPayloadLength))])
    #expect(big.payloadLength > Frame.defaultMaxPayloadLength)
    await socket.send(big.bytes)
    answer = try await socket.frames(1, quiet: .seconds(10))
    #expect(answer.frames.first?.id == 10)
    #expect(answer.frames.first?.errorPayload?.code == .tooLarge)
    #expect(try await Self.stillServes(socket))

    // The same id twice while the first call runs: the second is refused, the first answers.
    await socket.send(Self.execute(id: 11, method: "sleep", args: ["ms": 300]).bytes + Self.execute(id: 11, method: "echo").bytes)
    answer = try await socket.frames(2)
    #expect(answer.frames.map(\.id) == [11, 11])
    #expect(answer.frames.first?.errorPayload?.message.contains("already in flight") == true)
    #expect(answer.frames.last?.type == .executeResult)

    // A length shorter than the header is not jank-frame: the connection is closed.
    await socket.send([0, 0, 0, 3, 1, 2, 3])
    #expect(await socket.read().closed)

    // Truncated frame, then end of stream: closed without an answer.
    socket = try await RawSocket.connect(plugin.socketPath)
    await socket.send(Array(Self.health(id: 1).bytes.prefix(6)))
    socket.shutdownWrite()
    var end = await socket.read()
    #expect(end.closed && end.bytes.isEmpty)

    // A header that announces 4 GiB: skipped as it arrives, closed at end of stream.
    socket = try await RawSocket.connect(plugin.socketPath)
    await socket.send([0xFF, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0, 0, 0, 0, 0, 5] + [UInt8](repeating: 7, count: 1000))
    socket.shutdownWrite()
    end = await socket.read()
    #expect(end.closed)

    // Garbage after a valid frame: the valid one is answered, then error or close.
    socket = try await RawSocket.connect(plugin.socketPath)
    await socket.send(Self.health(id: 3).bytes + [0x00, 0x00, 0x00, 0x0C, 0x99, 1, 2, 3, 4, 5, 6, 7, 8, 0xAB, 0xCD, 0xEF])
    answer = try await socket.frames(2)
    // Answers come in any order: the health check's and an invalid error for the garbage.
    #expect(Set(answer.frames.map(\.type)) == [.healthCheckResult, .error])
    socket.shutdownWrite()
    #expect(await socket.read().closed)

    #expect(plugin.isAlive)
    let fresh = try await RawSocket.connect(plugin.socketPath)
    #expect(try await Self.stillServes(fresh))
  }

  @Test func randomBytesNeverCrashOrHangThePlugin() async throws {
    let workspace = try Workspace()
    let plugin = try await FramePlugin(workspace)
    var random = SeededRandom(seed: 0x6A616E6B)
    var closedByPlugin = 0
    var answered = 0
    for round in 0..<150 {
      let socket = try await RawSocket.connect(plugin.socketPath)
      var bytes: [UInt8]
      switch round % 3 {
      case 0:
        // Pure noise.
        bytes = (0..<Int.random(in: 1...300, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
      case 1:
        // A plausible header (small length, any type) over noise.
        let body = (0..<Int.random(in: 0...64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
        bytes = Frame(type: FrameType(rawValue: UInt8.random(in: 0...12, using: &random)), id: UInt64(round), payload: ByteBuffer(bytes: body)).bytes
      default:
        // A valid request with bytes flipped.
        bytes = Self.execute(id: UInt64(round), method: "echo", args: ["n": .number(Double(round))]).bytes
        for _ in 0..<3 { bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random) }
      }
      // A well-formed shutdown request would end the plugin, which is its right: leave those out.
      var check = ByteBuffer(bytes: bytes)
      var decoder = FrameDecoder()
      if let frames = try? decoder.nextFrames(from: &check), frames.contains(where: { $0.type == .shutdown }) { continue }
      await socket.send(bytes)
      socket.shutdownWrite()
      let result = await socket.read(quiet: .seconds(5))
      // Either side may end it, but never with silence: the plugin closes at end of stream.
      #expect(result.closed, "round \(round): the plugin neither answered nor closed after \(bytes)")
      if result.closed { closedByPlugin += 1 }
      if !result.bytes.isEmpty { answered += 1 }
    }
    print("frame fuzz (plugin end): 150 connections, \(answered) answered, \(closedByPlugin) closed")
    #expect(plugin.isAlive)
    let fresh = try await RawSocket.connect(plugin.socketPath)
    #expect(try await Self.stillServes(fresh))
  }
}

extension FrameDecoder {
  /// Every whole frame in `buffer`.
  mutating func nextFrames(from buffer: inout ByteBuffer) throws -> [Frame] {
    var frames: [Frame] = []
    while let next = try next(from: &buffer) {
      if case .frame(let frame) = next { frames.append(frame) }
    }
    return frames
  }
}

/// A small deterministic generator (SplitMix64), so that a failing round can be replayed.
struct SeededRandom: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed }

  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
