import JankControl
import JankFrame
import JankJSON
import JankProtocol
import NIOCore
import NIOPosix
import Glibc
import Synchronization

/// jank-frame (docs/jank-frame.md) to a Jank SDK plugin that accepted the offer: the same
/// `plugin.proto` messages as gRPC, as length-prefixed frames multiplexed by call id on one
/// Unix-socket connection.
final class FramePluginConnection: PluginConnection {
  let transportName = Frame.protocolName
  private let channel: any Channel
  private let calls: FrameCallHandler
  private let nextID = Atomic<UInt64>(1)
  private let maxPayloadLength: Int

  /// Connects and confirms the plugin answers a health check as healthy before `deadline`.
  static func connect(
    handshake: HandshakeLine, deadline: ContinuousClock.Instant, maxPayloadLength: Int = Frame.defaultMaxPayloadLength,
    group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, connectedSocket: CInt? = nil
  ) async throws -> FramePluginConnection {
    guard handshake.network == "unix" else {
      if let connectedSocket { Glibc.close(connectedSocket) }
      throw ControlError(.unavailable, "jank-frame runs over a Unix socket; the plugin offered \(handshake.network) \(handshake.address)")
    }
    // The socket is made here rather than by NIO so that its descriptor is known: the
    // call handler polls it briefly for an answer that is microseconds away (AdaptiveSpin).
    let fd: CInt
    do {
      fd = try connectedSocket ?? connectUnixSocket(path: handshake.address)
    } catch {
      throw ControlError(.unavailable, "could not connect to the plugin's jank-frame socket \(handshake.address): \(error)")
    }
    let calls = FrameCallHandler(fd: fd, spin: AdaptiveSpin.fromEnvironment())
    let channel: any Channel
    do {
      channel = try await ClientBootstrap(group: group)
        .channelInitializer { channel in
          channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxPayloadLength: maxPayloadLength)))
            try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
            try channel.pipeline.syncOperations.addHandler(calls)
          }
        }
        .withConnectedSocket(fd).get()
    } catch {
      // The descriptor is NIO's from here on: a failed set-up closes it with the channel.
      throw ControlError(.unavailable, "could not use the plugin's jank-frame socket \(handshake.address): \(error)")
    }
    let connection = FramePluginConnection(channel: channel, calls: calls, maxPayloadLength: maxPayloadLength)
    // A plugin is never ready without a healthy answer, even when the handshake used up the start timeout.
    let budget = max(ContinuousClock.now.duration(to: deadline), .milliseconds(100))
    guard await connection.healthCheck(timeout: min(budget, .seconds(5))) else {
      connection.close()
      throw ControlError(.unavailable, "plugin did not report healthy over jank-frame at \(handshake.address)")
    }
    return connection
  }

  private init(channel: any Channel, calls: FrameCallHandler, maxPayloadLength: Int) {
    self.channel = channel
    self.calls = calls
    self.maxPayloadLength = maxPayloadLength
  }

  nonisolated(nonsending) func execute(method: String, args: [String: JSONValue], timeout: Duration) async throws -> [String: JSONValue] {
    let id = newID()
    let timeoutMs = UInt32(clamping: max(timeout.nanosecondsClamped / 1_000_000, 1))
    let frame = Frame.execute(id: id, timeoutMs: timeoutMs, method: method, args: args)
    guard frame.payloadLength <= maxPayloadLength else {
      throw ControlError(.tooLarge, "the call's arguments are \(frame.payloadLength) bytes encoded, over jank-frame's maximum of \(maxPayloadLength)")
    }
    let answer = try await call(frame, timeout: timeout)
    switch answer.type {
    case .executeResult:
      do {
        return try answer.executeData()
      } catch {
        throw ControlError(.pluginError, "the plugin answered with data that is not JSON: \(error)")
      }
    case .error:
      throw Self.controlError(answer)
    default:
      throw ControlError(.pluginError, "the plugin answered an execute call with a \(answer.type) frame\(Self.protocolAdvice)")
    }
  }

  func healthCheck(timeout: Duration) async -> Bool {
    do {
      return Self.isHealthy(.success(try await call(Self.healthRequest(id: newID()), timeout: timeout)))
    } catch {
      return false
    }
  }

  /// Checks run on the connection's event loop, off its own timers (no task per check).
  func watchHealth(policy: PluginManifest.HealthPolicy, onFailure: @escaping @Sendable (Int) -> Void) -> HealthWatch {
    let loop = channel.eventLoop
    let timeout = Duration.milliseconds(policy.timeoutMs)
    return EventLoopHealthWatch(
      eventLoop: loop, policy: policy,
      check: { [self] healthy in
        let answer = loop.makePromise(of: Frame.self)
        calls.send(Self.healthRequest(id: newID()), promise: answer, timeout: timeout)
        answer.futureResult.whenComplete { healthy.succeed(Self.isHealthy($0)) }
      },
      onFailure: onFailure
    ).start()
  }

  /// An empty payload is an encoded `plugin.HealthCheckRequest`.
  private static func healthRequest(id: UInt64) -> Frame { Frame(type: .healthCheck, id: id) }

  /// Healthy only when the plugin answered in time with a health result saying so.
  private static func isHealthy(_ answer: Result<Frame, any Error>) -> Bool {
    guard case .success(let frame) = answer, frame.type == .healthCheckResult,
      let response = try? frame.message(as: Plugin_HealthCheckResponse.self)
    else { return false }
    return response.status == "healthy"
  }

  func shutdown(timeout: Duration) async {
    let id = newID()
    _ = try? await call(Frame(type: .shutdown, id: id), timeout: timeout)
  }

  func close() {
    channel.close(promise: nil)
  }

  private func newID() -> UInt64 { nextID.wrappingAdd(1, ordering: .relaxed).oldValue }

  /// Sends a request and waits for its answer. Timeout and task cancellation both fail the
  /// call at once and send the plugin a cancel frame.
  private nonisolated(nonsending) func call(_ frame: Frame, timeout: Duration) async throws -> Frame {
    let loop = channel.eventLoop
    let promise = loop.makePromise(of: Frame.self)
    let calls = calls
    return try await withTaskCancellationHandler {
      if loop.inEventLoop {
        calls.send(frame, promise: promise, timeout: timeout)
      } else {
        loop.execute { calls.send(frame, promise: promise, timeout: timeout) }
      }
      return try await promise.futureResult.get()
    } onCancel: {
      loop.execute { calls.abandon(id: frame.id, because: CancellationError()) }
    }
  }

  private static let protocolAdvice =
    " (a jank-frame protocol error in the plugin: rebuild it against a current JankPlugin SDK, or set \"transport\": \"grpc\" in its plugin.json)"

  static func controlError(_ answer: Frame) -> any Error {
    guard let error = FrameErrorPayload(payload: answer.payload) else {
      return ControlError(.pluginError, "the plugin answered with an empty error frame\(Self.protocolAdvice)")
    }
    switch error.code {
    case .pluginError: return ControlError(.pluginError, error.message)
    case .tooLarge: return ControlError(.tooLarge, "the call is too large for the plugin: \(error.message)")
    case .invalid: return ControlError(.invalid, "the plugin could not read the call: \(error.message)")
    case .cancelled: return ControlError(.timeout, "the plugin cancelled the call: \(error.message)")
    case .unavailable:
      // The plugin says it did not start the call (it is shutting down): safe to resend.
      return UndeliveredCall(error: ControlError(.unavailable, "the plugin is shutting down: \(error.message)"))
    default: return ControlError(.pluginError, "the plugin answered error \(error.code): \(error.message)")
    }
  }
}

/// The connection's calls in flight, touched only on its event loop: matches answers to
/// requests by id, runs deadlines, and fails exactly the calls in flight when the peer goes.
final class FrameCallHandler: ChannelInboundHandler, @unchecked Sendable {
  typealias InboundIn = InboundFrame
  typealias OutboundOut = Frame

  /// `fd` is the connection's socket (owned by its channel), polled while spinning.
  init(fd: CInt, spin: AdaptiveSpin?) {
    self.fd = fd
    self.spin = spin
  }

  private struct Pending {
    var promise: EventLoopPromise<Frame>
    var deadline: Scheduled<Void>?
    var type: FrameType
    var sentAt: UInt64
  }

  private let fd: CInt
  private var spin: AdaptiveSpin?
  private var context: ChannelHandlerContext?
  private var pending: [UInt64: Pending] = [:]
  private var closedReason: String?

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.context = nil
    failAll(ControlError(.unavailable, "the connection to the plugin was closed"))
  }

  /// On the event loop. A call that cannot be written never reached the plugin: it fails
  /// as `UndeliveredCall`, which may be sent once more to a replacement process.
  func send(_ frame: Frame, promise: EventLoopPromise<Frame>, timeout: Duration) {
    guard let context, closedReason == nil, context.channel.isActive else {
      promise.fail(UndeliveredCall(error: ControlError(.unavailable, "the connection to the plugin is closed (\(closedReason ?? "not connected"))")))
      return
    }
    let id = frame.id
    let deadline = context.eventLoop.scheduleTask(in: .nanoseconds(timeout.nanosecondsClamped)) { [self] in
      abandon(id: id, because: ControlError(.timeout, "the plugin did not answer within \(timeout.readable); raise timeout_ms or make the method faster"))
    }
    pending[id] = Pending(promise: promise, deadline: deadline, type: frame.type, sentAt: AdaptiveSpin.now())
    let written = context.eventLoop.makePromise(of: Void.self)
    written.futureResult.whenFailure { [self] error in
      guard let call = pending.removeValue(forKey: id) else { return }
      call.deadline?.cancel()
      call.promise.fail(UndeliveredCall(error: ControlError(.unavailable, "the call could not be written to the plugin: \(error)")))
    }
    context.writeAndFlush(wrapOutboundOut(frame), promise: written)
    // The only call in flight and answers have been quick: wait for this one on the CPU.
    if pending.count == 1, spin?.shouldSpin() == true {
      _ = spin?.spin(untilReadable: fd)
    }
  }

  /// Fails a call that is still waiting and tells the plugin to stop working on it.
  func abandon(id: UInt64, because error: any Error) {
    guard let call = pending.removeValue(forKey: id) else { return }
    call.deadline?.cancel()
    call.promise.fail(error)
    if call.type == .execute, let context, context.channel.isActive {
      context.writeAndFlush(wrapOutboundOut(Frame(type: .cancel, id: id)), promise: nil)
    }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .frame(let frame):
      // An answer to a call that already timed out or was cancelled is dropped.
      guard let call = pending.removeValue(forKey: frame.id) else { return }
      call.deadline?.cancel()
      spin?.record(waitNanoseconds: AdaptiveSpin.now() &- call.sentAt)
      call.promise.succeed(frame)
    case .tooLarge(_, let id, let length):
      guard let call = pending.removeValue(forKey: id) else { return }
      call.deadline?.cancel()
      call.promise.fail(ControlError(.tooLarge, "the plugin's answer is \(length) bytes, over jank-frame's maximum; return less data"))
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    closedReason = "the plugin closed it"
    failAll(ControlError(.unavailable, "the connection to the plugin failed: the plugin closed it during the call"))
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    // Undecodable bytes from the plugin: the stream cannot be trusted any more.
    closedReason = "\(error)"
    failAll(ControlError(.unavailable, "the connection to the plugin failed: \(error)"))
    context.close(promise: nil)
  }

  private func failAll(_ error: ControlError) {
    let calls = pending
    pending = [:]
    for call in calls.values {
      call.deadline?.cancel()
      call.promise.fail(error)
    }
  }
}

extension Duration {
  var nanosecondsClamped: Int64 {
    let (seconds, attoseconds) = components
    guard seconds >= 0 else { return 0 }
    guard seconds < Int64.max / 1_000_000_000 - 1 else { return .max }
    return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
  }
}

/// A connected, close-on-exec Unix stream socket. A non-blocking Unix-socket connect
/// completes or fails at once (EAGAIN when the backlog is full), so it blocks nothing.
private func connectUnixSocket(path: String) throws -> CInt {
  // Non-blocking: a peer that never accepts must not hold this thread once its backlog is full.
  let fd = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0)
  guard fd >= 0 else { throw ControlError(.unavailable, "socket() failed: errno \(errno)") }
  let code = UnixSocketAddress.connect(fd, path: path)
  guard code == 0 else {
    close(fd)
    throw ControlError(.unavailable, code == ENAMETOOLONG ? "the socket path is longer than \(UnixSocketAddress.maximumPathLength) bytes" : String(cString: strerror(code)))
  }
  return fd
}
