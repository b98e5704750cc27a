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
  private let channel: NIOAsyncChannel<Connection, Never>
  private let router: ControlRouter
  private let logger: Logger

  struct Connection: Sendable {
    let channel: NIOAsyncChannel<LineFrame, ByteBuffer>
    let peer: PeerCredentials?
  }

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
      .bind(unixDomainSocketPath: path) { child in
        let peer: EventLoopFuture<PeerCredentials?> =
          if let provider = child as? any SocketOptionProvider {
            provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
              .map { (credentials: PeerCredentials) in Optional(credentials) }
          } else {
            child.eventLoop.makeSucceededFuture(nil)
          }
        return peer.flatMapThrowing { peer in
          try child.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFrameDecoder(maximumLength: maximumLineLength)))
          return Connection(channel: try NIOAsyncChannel(wrappingChannelSynchronously: child), peer: peer)
        }
      }
    chmod(path, 0o660)
    return ControlServer(path: path, channel: channel, router: router, logger: logger)
  }

  private init(path: String, channel: NIOAsyncChannel<Connection, Never>, router: ControlRouter, logger: Logger) {
    self.path = path
    self.channel = channel
    self.router = router
    self.logger = logger
  }

  /// Serves until the task is cancelled, then closes the socket and removes its file.
  public func run() async throws {
    defer { unlink(path) }
    try await withTaskCancellationHandler {
      try await channel.executeThenClose { inbound in
        try await withThrowingDiscardingTaskGroup { group in
          for try await connection in inbound {
            group.addTask { await self.serve(connection) }
          }
        }
      }
    } onCancel: {
      channel.channel.close(promise: nil)
    }
  }

  private func serve(_ connection: Connection) async {
    if let peer = connection.peer, !PeerPolicy.allows(peer, socketPath: path) {
      logger.warning("control connection refused", metadata: ["uid": "\(peer.uid)", "pid": "\(peer.pid)"])
      try? await connection.channel.executeThenClose { _, outbound in
        let error = ControlError(.invalid, "permission denied: uid \(peer.uid) may not use \(path); run as root, as the supervisor's user, or as a member of the socket's group")
        var line = ControlCoding.errorResponse(id: .null, error.errorObject)
        line.append(UInt8(ascii: "\n"))
        try await outbound.write(ByteBuffer(bytes: line))
      }
      return
    }
    do {
      try await connection.channel.executeThenClose { inbound, outbound in
        try await withThrowingDiscardingTaskGroup { group in
          for try await frame in inbound {
            switch frame {
            case .tooLong:
              let error = ControlError(.tooLarge, "request line is longer than the control channel accepts; send smaller arguments")
              try await Self.send(ControlCoding.errorResponse(id: .null, error.errorObject), on: outbound)
            case .line(let buffer):
              guard buffer.readableBytes > 0 else { continue }
              let request = Data(buffer.readableBytesView)
              group.addTask {
                if let response = await self.router.respond(to: request) {
                  try? await Self.send(response, on: outbound)
                }
              }
            }
          }
        }
      }
    } catch {
      logger.debug("control connection ended", metadata: ["error": "\(error)"])
    }
  }

  private static func send(_ response: Data, on outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws {
    var buffer = ByteBuffer()
    buffer.reserveCapacity(response.count + 1)
    buffer.writeBytes(response)
    buffer.writeInteger(UInt8(ascii: "\n"))
    try await outbound.write(buffer)
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
