#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Glibc
public import JankJSON
import NIOCore
import NIOPosix
import Synchronization

/// A typed client of the control channel: one connection, many calls in flight on it
/// (pipelined, matched by id). jankctl, jank-api and the tests all use this one client.
public final class ControlClient: Sendable {
  public let path: String
  /// The longest answer line this client reads.
  public static let maximumResponseLength = 256 << 20
  private let state: Mutex<State>

  private struct State {
    var nextID = 0
    var pending: [Int: CheckedContinuation<Data, any Error>] = [:]
    /// Set once the connection is unusable; later calls fail with it at once.
    var terminalError: ControlError?
    var channel: (any Channel)?
  }

  /// Connects to the supervisor; a missing socket or refused connection is `.unavailable`
  /// with a message that says how to start the supervisor.
  public static func connect(path: String) async throws -> ControlClient {
    let client = ControlClient(path: path)
    do {
      // The handlers go in before the connection is active: a refusal sent at once by the
      // supervisor must not be read by an empty pipeline.
      let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelInitializer { channel in
          channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFrameDecoder(maximumLength: maximumResponseLength)))
            try channel.pipeline.syncOperations.addHandler(ResponseHandler(client: client))
          }
        }
        .connect(unixDomainSocketPath: path).get()
      client.state.withLock { $0.channel = channel }
    } catch {
      throw ControlError(
        .unavailable,
        "cannot reach the supervisor at \(path): \(Self.reason(error)); start it with `jank-supervisor` or point --socket / JANK_SOCKET at its socket",
        details: ["unreachable": true, "reason": .string(Self.reason(error))]
      )
    }
    return client
  }

  private init(path: String) {
    self.path = path
    self.state = Mutex(State())
  }

  /// False once the connection failed or closed: calls would fail at once; reconnect.
  public var isConnected: Bool {
    state.withLock { $0.terminalError == nil && $0.channel != nil }
  }

  public func close() async {
    try? await state.withLock { $0.channel }?.close()
  }

  /// Calls a control method; a JSON-RPC error comes back as a thrown ``ControlError``.
  /// With `timeout`, a call that has no answer by then fails with `timeout` (the supervisor
  /// may still carry it out).
  public func call<Params, Result>(_ method: ControlMethod<Params, Result>, _ params: Params, timeout: Duration? = nil) async throws -> Result {
    let response = try await send(method: method.name, params: params, timeout: timeout)
    return try Self.decodeResult(Result.self, from: response)
  }

  /// Calls any method with untyped params and returns the untyped result (jankctl --json).
  public func callRaw(method: String, params: JSONValue, timeout: Duration? = nil) async throws -> JSONValue {
    let response = try await send(method: method, params: params, timeout: timeout)
    return try Self.decodeResult(JSONValue.self, from: response)
  }

  private static func decodeResult<Result: Decodable>(_ type: Result.Type, from response: Data) throws -> Result {
    let answer: JSONRPCAnswer<Result>
    do {
      answer = try ControlCoding.decoder.decode(JSONRPCAnswer<Result>.self, from: response)
    } catch {
      throw ControlError(.internal, "the supervisor's answer could not be read (\(ControlCoding.explain(error))); are jankctl and jank-supervisor the same version?")
    }
    if let error = answer.error { throw ControlError(error) }
    guard let result = answer.result else { throw ControlError(.internal, "the supervisor's answer has neither a result nor an error") }
    return result
  }

  private func send<Params: Encodable>(method: String, params: Params, timeout: Duration?) async throws -> Data {
    let id = state.withLock { state -> Int in
      state.nextID += 1
      return state.nextID
    }
    var line = try ControlCoding.encoder.encode(JSONRPCRequest(id: .number(id), method: method, params: params))
    guard line.count <= ControlChannel.maximumRequestLength else {
      throw ControlError(.tooLarge, "the request is \(line.count) bytes, over the control channel's \(ControlChannel.maximumRequestLength) bytes; send smaller arguments")
    }
    line.append(UInt8(ascii: "\n"))
    let buffer = ByteBuffer(bytes: line)
    return try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Data, any Error>) in
        let refusal = state.withLock { state -> (any Error)? in
          if let error = state.terminalError { return error }
          if Task.isCancelled { return CancellationError() }
          state.pending[id] = continuation
          return nil
        }
        if let refusal {
          continuation.resume(throwing: refusal)
          return
        }
        guard let channel = state.withLock({ $0.channel }) else {
          finish(id: id, with: .failure(ControlError(.unavailable, "not connected to \(path)", details: ["unreachable": true, "reason": "not connected"])))
          return
        }
        if let timeout {
          // On the connection's event loop: the deadline holds however busy the caller's pool is.
          channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)) {
            self.finish(id: id, with: .failure(ControlError(
              .timeout, "no answer from the supervisor to \(method) within \(timeout); it may be busy (see `jankctl status`) or the call is slow; it may still complete")))
          }
        }
        channel.writeAndFlush(buffer).whenFailure { error in
          let fallback = ControlError(.unavailable, "could not send to the supervisor at \(self.path): \(Self.reason(error))", details: ["unreachable": true, "reason": .string(Self.reason(error))])
          self.finish(id: id, with: .failure(self.state.withLock { $0.terminalError } ?? fallback))
        }
      }
    } onCancel: {
      finish(id: id, with: .failure(CancellationError()))
    }
  }

  fileprivate func finish(id: Int, with result: Result<Data, any Error>) {
    let continuation = state.withLock { $0.pending.removeValue(forKey: id) }
    continuation?.resume(with: result)
  }

  fileprivate func deliver(_ line: ByteBuffer) {
    // The id from the answer's first bytes (the supervisor writes it before the result):
    // the caller decodes the answer once, not a second time here.
    let head = line.getSlice(at: line.readerIndex, length: min(line.readableBytes, 4096))!
    if case .number(let id)? = jsonRPCID(inHead: head) {
      finish(id: id, with: .success(Data(line.readableBytesView)))
      return
    }
    // An error without an id (a refused peer) ends the connection for every call, even one
    // that is not sent yet.
    guard let head = try? ControlCoding.decoder.decode(JSONRPCResponseHead.self, from: Data(line.readableBytesView)) else { return }
    if case .number(let id)? = head.id {
      finish(id: id, with: .success(Data(line.readableBytesView)))
    } else if let error = head.error {
      failAll(ControlError(error), terminal: true)
    }
  }

  fileprivate func failAll(_ error: ControlError, terminal: Bool) {
    let waiting = state.withLock { state -> [CheckedContinuation<Data, any Error>] in
      if terminal, state.terminalError == nil { state.terminalError = error }
      defer { state.pending = [:] }
      return Array(state.pending.values)
    }
    for continuation in waiting { continuation.resume(throwing: error) }
  }

  /// Whether something accepts connections at `path` (used to tell a live socket from a stale one).
  static func canConnect(path: String) -> Bool {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { Glibc.close(fd) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
      raw.copyBytes(from: bytes)
    }
    let result = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
      }
    }
    return result == 0
  }

  private static func reason(_ error: any Error) -> String {
    if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
    return "\(error)"
  }
}

private final class ResponseHandler: ChannelInboundHandler, Sendable {
  typealias InboundIn = LineFrame

  let client: ControlClient

  init(client: ControlClient) {
    self.client = client
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .line(let buffer):
      client.deliver(buffer)
    case .tooLong(let head):
      // An answer too large to read fails its own call, found by the id it starts with; if
      // none can be told, every call in flight (each would otherwise wait forever).
      let error = ControlError(.tooLarge, "the supervisor's answer is larger than this client reads (\(ControlClient.maximumResponseLength) bytes); ask for less (e.g. a smaller --tail)")
      if case .number(let id)? = jsonRPCID(inHead: head) {
        client.finish(id: id, with: .failure(error))
      } else {
        client.failAll(error, terminal: false)
      }
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    client.failAll(
      ControlError(.unavailable, "the supervisor at \(client.path) closed the connection; retry once it is back", details: ["unreachable": true, "reason": "it closed the connection"]),
      terminal: true)
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    context.close(promise: nil)
  }
}
