#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Glibc
public import Logging
import NIOCore
import NIOPosix

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
    maximumLineLength: Int = 16 << 20,
    logger: Logger
  ) async throws -> ControlServer {
    guard path.utf8.count <= 107 else {
      throw ControlError(.invalid, "control socket path '\(path)' is longer than 107 bytes; choose a shorter --socket")
    }
    try removeStaleSocket(at: path)
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.backlog, value: 256)
      .childChannelInitializer { child in
        child.eventLoop.makeCompletedFuture {
          try child.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFrameDecoder(maximumLength: maximumLineLength)))
          try child.pipeline.syncOperations.addHandler(ControlConnectionHandler(router: router, socketPath: path, logger: logger))
        }
      }
      .bind(unixDomainSocketPath: path)
      .get()
    chmod(path, 0o660)
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
private final class ControlConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
  typealias InboundIn = LineFrame
  typealias OutboundOut = ByteBuffer

  // Touched only on the channel's event loop.
  private var allowed = false
  private let router: ControlRouter
  private let socketPath: String
  private let logger: Logger

  init(router: ControlRouter, socketPath: String, logger: Logger) {
    self.router = router
    self.socketPath = socketPath
    self.logger = logger
  }

  func channelActive(context: ChannelHandlerContext) {
    context.fireChannelActive()
    guard let provider = context.channel as? any SocketOptionProvider else {
      allowed = true
      return
    }
    let channel = context.channel
    let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
    provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
      .whenComplete { (result: Result<PeerCredentials, any Error>) in
        let handler = loopBound.value
        switch result {
        case .success(let peer) where PeerPolicy.allows(peer, socketPath: handler.socketPath):
          handler.allowed = true
          channel.read()
        case .success(let peer):
          handler.logger.warning("control connection refused", metadata: ["uid": "\(peer.uid)", "pid": "\(peer.pid)"])
          let error = ControlError(.invalid, "permission denied: uid \(peer.uid) may not use \(handler.socketPath); run as root, as the supervisor's user, or as a member of the socket's group")
          // Close only our side: a full close with the client's request still unread would
          // send a reset that can destroy the explanation before the client reads it.
          Self.write(ControlCoding.errorResponse(id: .null, error.errorObject), to: channel).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
            channel.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
          }
        case .failure:
          channel.close(promise: nil)
        }
      }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard allowed else { return }
    let channel = context.channel
    switch unwrapInboundIn(data) {
    case .tooLong:
      let error = ControlError(.tooLarge, "request line is longer than the control channel accepts; send smaller arguments")
      _ = Self.write(ControlCoding.errorResponse(id: .null, error.errorObject), to: channel)
    case .line(let buffer):
      guard buffer.readableBytes > 0 else { return }
      let request = Data(buffer.readableBytesView)
      let router = self.router
      // A pool task, not this connection's event loop: management methods do blocking file
      // and cgroup work, which on an event loop delays every plugin's output and calls
      // (measured: start timeouts under load; BENCHMARKS.md).
      Task {
        if let response = await router.respond(to: request) {
          _ = Self.write(response, to: channel)
        }
      }
    }
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

/// `struct ucred` as SO_PEERCRED fills it (Glibc hides it behind _GNU_SOURCE).
struct PeerCredentials: Sendable {
  var pid: pid_t = 0
  var uid: uid_t = 0
  var gid: gid_t = 0
}

/// Who may talk to the supervisor: root, its own user, or a member of the socket's group.
enum PeerPolicy {
  static func allows(_ peer: PeerCredentials, socketPath: String) -> Bool {
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
