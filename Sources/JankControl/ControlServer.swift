#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CJankShim
import Glibc
public import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The supervisor's end of the control channel: JSON-RPC 2.0, one object per line, over a
/// Unix stream socket (mode 0660) that only root, the supervisor's user and members of the
/// socket's group may use (checked with SO_PEERCRED). Requests on one connection are
/// handled concurrently and answered by id as they finish.
public final class ControlServer: Sendable {
  public let path: String
  private let channel: any Channel

  /// Binds the socket. A stale socket file is replaced; a live one is an error, so a second
  /// supervisor never steals the socket of a running one.
  public static func bind(
    path: String,
    router: ControlRouter,
    limits: ControlServerLimits = ControlServerLimits(),
    logger: Logger
  ) async throws -> ControlServer {
    guard path.utf8.count <= 107 else {
      throw ControlError(.invalid, "control socket path '\(path)' is longer than 107 bytes; choose a shorter --socket")
    }
    try removeStaleSocket(at: path)
    // Bound and listening under a temporary name, made group-only, then renamed into place:
    // a client that sees the socket can connect at once (not ECONNREFUSED between bind and
    // listen), and nobody outside the group ever finds it with the umask's permissions.
    let staging = path + ".\(getpid()).new"
    let bindPath = staging.utf8.count <= 107 ? staging : path
    unlink(staging)
    let connections = ConnectionCount()
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.backlog, value: 256)
      .childChannelInitializer { child in
        child.eventLoop.makeCompletedFuture {
          let sync = child.pipeline.syncOperations
          try sync.addHandler(PartialLineTimeout(timeout: limits.partialLineTimeout))
          try sync.addHandler(ByteToMessageHandler(LineFrameDecoder(maximumLength: limits.maximumLineLength)))
          try sync.addHandler(ControlConnectionHandler(router: router, socketPath: path, limits: limits, connections: connections, logger: logger))
        }
      }
      .bind(unixDomainSocketPath: bindPath)
      .get()
    chmod(bindPath, 0o660)
    if bindPath != path, rename(bindPath, path) != 0 {
      let reason = String(cString: strerror(errno))
      unlink(bindPath)
      try? await channel.close()
      throw ControlError(.unavailable, "cannot move the control socket into place at \(path): \(reason)")
    }
    return ControlServer(path: path, channel: channel)
  }

  private init(path: String, channel: any Channel) {
    self.path = path
    self.channel = channel
  }

  /// Serves until the task is cancelled, then closes the socket and removes its file.
  public func run() async {
    defer { unlink(path) }
    await withTaskCancellationHandler {
      try? await channel.closeFuture.get()
    } onCancel: {
      channel.close(promise: nil)
    }
  }

  private static func removeStaleSocket(at path: String) throws {
    var info = stat()
    guard lstat(path, &info) == 0 else { return }
    guard (info.st_mode & S_IFMT) == S_IFSOCK else {
      throw ControlError(.conflict, "'\(path)' exists and is not a socket; remove it or choose another --socket")
    }
    if ControlClient.canConnect(path: path) {
      throw ControlError(.conflict, "another supervisor is already listening on \(path); stop it first or choose another --socket")
    }
    unlink(path)
  }
}

/// One control connection: checks the peer, then answers each line in its own task, writing
/// responses as they complete (so a slow call never holds up a fast one behind it).
///
/// Reading is the only way a client can make the supervisor hold memory, so reads stop
/// while the connection has `maximumInFlight` requests unanswered or its socket does not take
/// more output (a client that pipelines without reading), and resume as answers drain.
private final class ControlConnectionHandler: ChannelDuplexHandler, @unchecked Sendable {
  typealias InboundIn = LineFrame
  typealias OutboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  // Touched only on the channel's event loop.
  private var allowed = false
  private var counted = false
  private var inFlight = 0
  private var readWanted = false
  private var waiting = CircularBuffer<LineFrame>()
  private let router: ControlRouter
  private let socketPath: String
  private let limits: ControlServerLimits
  private let connections: ConnectionCount
  private let logger: Logger

  init(router: ControlRouter, socketPath: String, limits: ControlServerLimits, connections: ConnectionCount, logger: Logger) {
    self.router = router
    self.socketPath = socketPath
    self.limits = limits
    self.connections = connections
    self.logger = logger
  }

  func channelActive(context: ChannelHandlerContext) {
    context.fireChannelActive()
    let channel = context.channel
    guard let provider = channel as? any SocketOptionProvider else {
      allow(context)
      return
    }
    let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
    provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
      .whenComplete { (result: Result<jank_peer, any Error>) in
        let (handler, context) = loopBound.value
        switch result {
        case .success(let peer) where PeerPolicy.allows(peer, socketPath: handler.socketPath):
          if let why = handler.router.peerRefusal?(peer.pid, peer.uid) {
            handler.logger.warning("control connection refused", metadata: ["uid": "\(peer.uid)", "pid": "\(peer.pid)", "reason": "\(why)"])
            handler.refuse(channel, ControlError(.invalid, why))
          } else {
            handler.allow(context)
          }
        case .success(let peer):
          handler.logger.warning("control connection refused", metadata: ["uid": "\(peer.uid)", "pid": "\(peer.pid)"])
          handler.refuse(channel, ControlError(.invalid, "permission denied: uid \(peer.uid) may not use \(handler.socketPath); run as root, as the supervisor's user, or as a member of the socket's group"))
        case .failure:
          channel.close(promise: nil)
        }
      }
  }

  func channelInactive(context: ChannelHandlerContext) {
    if counted {
      counted = false
      connections.remove()
    }
    context.fireChannelInactive()
  }

  /// Counted against the limit only once the peer is let in: connections refused for who
  /// they are (a plugin, another user) never take the operator's places.
  private func allow(_ context: ChannelHandlerContext) {
    counted = connections.add(limit: limits.maximumConnections)
    guard counted else {
      logger.warning("control connection refused: too many connections", metadata: ["limit": "\(limits.maximumConnections)"])
      refuse(context.channel, ControlError(.busy, "the supervisor already serves \(limits.maximumConnections) control connections; close idle ones and retry"))
      return
    }
    allowed = true
    readIfWanted(context)
  }

  /// Says why and closes only our side: a full close with the client's request still unread
  /// would send a reset that can destroy the explanation before the client reads it.
  private func refuse(_ channel: any Channel, _ error: ControlError) {
    Self.write(ControlCoding.errorResponse(id: .null, error.errorObject), to: channel).whenComplete { _ in
      channel.close(mode: .output, promise: nil)
      // Long enough for the client to read the sentence, short enough that refused
      // connections opened in a loop cannot pile up.
      channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
    }
  }

  // MARK: Reading only while the connection keeps up

  func read(context: ChannelHandlerContext) {
    if allowed, waiting.isEmpty, inFlight < limits.maximumInFlight, context.channel.isWritable {
      context.read()
    } else {
      readWanted = true
    }
  }

  private func readIfWanted(_ context: ChannelHandlerContext) {
    guard readWanted, allowed, waiting.isEmpty, inFlight < limits.maximumInFlight, context.channel.isWritable else { return }
    readWanted = false
    context.read()
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    startWaiting(context)
    readIfWanted(context)
    context.fireChannelWritabilityChanged()
  }

  /// Starts queued requests while there is room in flight and the socket takes output: a
  /// client that pipelines without reading gets no more answers made than it reads.
  private func startWaiting(_ context: ChannelHandlerContext) {
    while inFlight < limits.maximumInFlight, context.channel.isWritable, let next = waiting.popFirst() {
      start(next, context: context)
    }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard allowed else { return }
    // One read can bring many lines at once; beyond the in-flight limit they wait here (at
    // most one read's worth, since reading stops) and start as answers drain.
    guard inFlight < limits.maximumInFlight, waiting.isEmpty, context.channel.isWritable else {
      waiting.append(unwrapInboundIn(data))
      return
    }
    start(unwrapInboundIn(data), context: context)
  }

  private func start(_ frame: LineFrame, context: ChannelHandlerContext) {
    let channel = context.channel
    switch frame {
    case .tooLong(let head):
      // Answered under the request's own id when its first bytes name one, so that a
      // client with other calls in flight fails only this one.
      let error = ControlError(.tooLarge, "the request is longer than the control channel's \(limits.maximumLineLength) bytes; send smaller arguments")
      inFlight += 1
      let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
      Self.write(ControlCoding.errorResponse(id: jsonRPCID(inHead: head) ?? .null, error.errorObject), to: channel).whenComplete { _ in
        let (handler, context) = loopBound.value
        handler.answered(context)
      }
    case .line(let buffer):
      guard buffer.readableBytes > 0 else { return }
      let request = Data(buffer.readableBytesView)
      let router = self.router
      inFlight += 1
      let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
      // A pool task, not this connection's event loop: management methods do blocking file
      // and cgroup work, which on an event loop delays every plugin's output and calls
      // (measured: start timeouts under load; BENCHMARKS.md).
      Task {
        let response = await router.respond(to: request)
        channel.eventLoop.execute {
          let (handler, context) = loopBound.value
          guard let response else { return handler.answered(context) }
          Self.write(response, to: channel).whenComplete { _ in
            let (handler, context) = loopBound.value
            handler.answered(context)
          }
        }
      }
    }
  }

  private func answered(_ context: ChannelHandlerContext) {
    inFlight -= 1
    startWaiting(context)
    readIfWanted(context)
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    logger.debug("control connection error", metadata: ["error": "\(error)"])
    context.close(promise: nil)
  }

  private static func write(_ response: Data, to channel: any Channel) -> EventLoopFuture<Void> {
    var buffer = channel.allocator.buffer(capacity: response.count + 1)
    buffer.writeBytes(response)
    buffer.writeInteger(UInt8(ascii: "\n"))
    return channel.writeAndFlush(buffer)
  }
}

/// What one client may cost the supervisor. Hitting a limit costs only that client.
public struct ControlServerLimits: Sendable {
  /// The longest request line; a longer one is refused alone (`too_large`).
  public var maximumLineLength = ControlChannel.maximumRequestLength
  /// Connections served at once; more are refused with `busy` and closed. High enough that
  /// thousands of idle ones leave room for the operator (each costs a descriptor and a few kB).
  public var maximumConnections = 4096
  /// Requests one connection may have unanswered before the supervisor stops reading it.
  public var maximumInFlight = 128
  /// A connection that sent part of a line and then nothing for this long is closed.
  public var partialLineTimeout: Duration = .seconds(30)

  public init() {}
}

/// Limits both ends of the control channel agree on.
public enum ControlChannel {
  public static let maximumRequestLength = 16 << 20
}

/// Connections open on one server.
final class ConnectionCount: Sendable {
  private let count = Mutex(0)

  /// Counts one more connection unless that would pass `limit`; whether it did.
  func add(limit: Int) -> Bool {
    count.withLock { count in
      guard count < limit else { return false }
      count += 1
      return true
    }
  }

  func remove() { count.withLock { $0 -= 1 } }
}

/// Closes a connection that started a line and then sent nothing more for `timeout` (a
/// client stuck mid-request, or one holding a connection open by trickling nothing). An idle
/// connection between complete requests is left alone: jank-api keeps its connections for
/// as long as it runs.
///
/// The clock runs only while the server asks for bytes: when it stops reading because the
/// connection has its most calls in flight, the rest of a line waits in the socket through
/// no fault of the client (200 pipelined calls on a loaded machine were closed for it).
final class PartialLineTimeout: ChannelDuplexHandler, @unchecked Sendable {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer
  typealias OutboundIn = Never

  private let timeout: Duration
  private var timer: Scheduled<Void>?
  /// Whether the bytes so far end mid-line.
  private var midLine = false

  init(timeout: Duration) {
    self.timeout = timeout
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let buffer = unwrapInboundIn(data)
    if buffer.readableBytes > 0 {
      midLine = buffer.getInteger(at: buffer.writerIndex - 1, as: UInt8.self) != UInt8(ascii: "\n")
    }
    timer?.cancel()
    timer = nil
    context.fireChannelRead(data)
  }

  func read(context: ChannelHandlerContext) {
    if midLine, timer == nil {
      let channel = context.channel
      timer = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)) {
        channel.close(promise: nil)
      }
    }
    context.read()
  }

  func channelInactive(context: ChannelHandlerContext) {
    timer?.cancel()
    timer = nil
    context.fireChannelInactive()
  }
}

/// `struct ucred` as SO_PEERCRED fills it (Glibc hides it behind _GNU_SOURCE).
/// Who may talk to the supervisor: root, its own user, or a member of the socket's group.
enum PeerPolicy {
  static func allows(_ peer: jank_peer, socketPath: String) -> Bool {
    if peer.uid == 0 || peer.uid == geteuid() { return true }
    var info = stat()
    guard stat(socketPath, &info) == 0 else { return false }
    if peer.gid == info.st_gid { return true }
    return supplementaryGroups(of: peer.pid).contains(info.st_gid)
  }

  private static func supplementaryGroups(of pid: pid_t) -> [gid_t] {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return [] }
    for line in status.split(separator: "\n") where line.hasPrefix("Groups:") {
      return line.dropFirst("Groups:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { gid_t($0) }
    }
    return []
  }
}
