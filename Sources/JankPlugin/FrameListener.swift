import CJankShim
import Glibc
import NIOCore

/// The plugin's jank-frame listening socket. Connections are accepted here, on a thread of
/// its own, and each is then served by a `FrameConnection` (a thread of its own too) that
/// reads and writes the descriptor directly. A plugin has one or two connections, so these
/// blocked threads are cheap.
final class FrameListener: Sendable {
  let fd: CInt

  private init(fd: CInt) { self.fd = fd }

  static func bind(path: String) throws -> FrameListener {
    let fd = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw ListenError("socket() failed: \(String(cString: strerror(errno)))") }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
      Glibc.close(fd)
      throw ListenError("socket path '\(path)' is longer than 107 bytes")
    }
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes + [0]) }
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard bound == 0, listen(fd, 16) == 0 else {
      let problem = String(cString: strerror(errno))
      Glibc.close(fd)
      throw ListenError("could not listen on '\(path)': \(problem)")
    }
    return FrameListener(fd: fd)
  }

  /// Accepted connection descriptors, until `close()`.
  func connections() -> AsyncStream<CInt> {
    let (stream, continuation) = AsyncStream.makeStream(of: CInt.self)
    // A bare pthread, not Foundation's Thread: touching Foundation here would initialize
    // CoreFoundation at start-up, which scans the whole binary's symbol table (dladdr) and
    // costs a plugin a noticeable part of its start time.
    let loop = Unmanaged.passRetained(AcceptLoop(fd: fd, continuation: continuation))
    var thread = pthread_t()
    let created = pthread_create(&thread, nil, { context in
      jank_name_thread("jank-accept")
      let loop = Unmanaged<AcceptLoop>.fromOpaque(context!).takeRetainedValue()
      loop.run()
      return nil
    }, loop.toOpaque())
    if created == 0 {
      pthread_detach(thread)
    } else {
      loop.release()
      continuation.finish()
    }
    return stream
  }

  /// Stops accepting: the accept thread sees the shutdown and ends the stream.
  func close() {
    shutdown(fd, CInt(SHUT_RDWR))
  }
}

/// The accept thread's work: hand out connections until the listener is shut down.
private final class AcceptLoop: Sendable {
  let fd: CInt
  let continuation: AsyncStream<CInt>.Continuation

  init(fd: CInt, continuation: AsyncStream<CInt>.Continuation) {
    self.fd = fd
    self.continuation = continuation
  }

  func run() {
    while true {
      let connection = jank_accept_cloexec(fd)
      if connection >= 0 {
        if let refusal = HostCheck.refusal(connection) {
          _ = "jank: \(refusal)\n".withCString { write(2, $0, strlen($0)) }
          Glibc.close(connection)
        } else {
          continuation.yield(connection)
        }
      } else if errno != EINTR && errno != ECONNABORTED {
        break  // the listener was shut down
      }
    }
    Glibc.close(fd)
    continuation.finish()
  }
}

/// Only the plugin's host may call it. A connection is served when the process that made it
/// (`SO_PEERCRED`) is one of this plugin's ancestors: the supervisor, or a go-plugin host,
/// also through a wrapper script that did not `exec`. A sibling plugin that reaches the
/// socket (same uid) is refused. Both servers ask: jank-frame on accept, gRPC as each
/// connection's channel is set up.
enum HostCheck {
  static func refusal(_ connection: CInt) -> String? {
    var peer = jank_peer()
    guard jank_peer_credentials(connection, &peer) == 0 else {
      return "refused a jank-frame connection: the kernel does not say who made it"
    }
    return refusal(peer, protocol: "jank-frame")
  }

  static func refusal(_ peer: jank_peer, protocol name: String) -> String? {
    if peer.pid > 0, isAncestor(peer.pid) { return nil }
    return "refused a \(name) connection from process \(peer.pid) (uid \(peer.uid)): only this plugin's host may call it"
  }

  static func isAncestor(_ pid: pid_t) -> Bool {
    var current = getppid()
    for _ in 0..<64 {
      if current == pid { return true }
      guard current > 1, let parent = parent(of: current) else { return false }
      current = parent
    }
    return false
  }

  /// The fourth field of /proc/PID/stat, after the command name in parentheses.
  private static func parent(of pid: pid_t) -> pid_t? {
    let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { Glibc.close(fd) }
    var buffer = [UInt8](repeating: 0, count: 1024)
    let n = read(fd, &buffer, buffer.count)
    guard n > 0, let close = buffer[..<n].lastIndex(of: UInt8(ascii: ")")) else { return nil }
    let fields = buffer[(close + 1)..<n].split(separator: UInt8(ascii: " "))
    guard fields.count > 1 else { return nil }
    return pid_t(String(decoding: fields[1], as: UTF8.self))
  }
}

extension HostCheck {
  /// The gRPC server's form of the check. The Posix transport has no accept filter of its
  /// own; its per-connection callback runs before any stream of the connection is served.
  /// A refused connection is closed here (failing the callback's future alone leaves it open).
  static func admit(_ channel: any Channel) -> EventLoopFuture<Void> {
    guard let provider = channel as? any SocketOptionProvider else {
      return channel.eventLoop.makeFailedFuture(ListenError("refused a gRPC connection: the kernel does not say who made it"))
    }
    return provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
      .flatMapThrowing { (peer: jank_peer) in
        guard let refusal = refusal(peer, protocol: "gRPC") else { return }
        _ = "jank: \(refusal)\n".withCString { write(2, $0, strlen($0)) }
        channel.close(promise: nil)
        throw ListenError(refusal)
      }
  }
}

struct ListenError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}
