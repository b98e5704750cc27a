import CJankShim
import Glibc

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
        continuation.yield(connection)
      } else if errno != EINTR && errno != ECONNABORTED {
        break  // the listener was shut down
      }
    }
    Glibc.close(fd)
    continuation.finish()
  }
}

struct ListenError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}
