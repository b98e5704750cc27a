import Foundation
import Glibc
import JankFrame
import NIOCore

/// A blocking Unix stream socket for throwing arbitrary bytes at a peer. Every blocking call
/// runs on its own thread (`offPool`), never on the concurrency pool.
final class RawSocket: @unchecked Sendable {
  let fd: Int32

  init(fd: Int32) { self.fd = fd }

  static func connect(_ path: String) async throws -> RawSocket {
    try await offPool {
      let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
      guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
      var address = sockaddr_un()
      address.sun_family = sa_family_t(AF_UNIX)
      withUnsafeMutableBytes(of: &address.sun_path) { raw in
        raw.copyBytes(from: Array(path.utf8.prefix(raw.count - 1)) + [0])
      }
      let rc = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
      }
      guard rc == 0 else {
        close(fd)
        throw POSIXError(.init(rawValue: errno) ?? .EIO)
      }
      return RawSocket(fd: fd)
    }
  }

  /// Sends everything; false when the peer closed first.
  @discardableResult
  func send(_ bytes: [UInt8]) async -> Bool {
    await offPool {
      var offset = 0
      while offset < bytes.count {
        let n = bytes.withUnsafeBytes { Glibc.send(self.fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
        if n < 0, errno == EINTR { continue }
        guard n > 0 else { return false }
        offset += n
      }
      return true
    }
  }

  func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

  /// Reads until the peer closes (`closed`) or `quiet` passes with nothing new.
  func read(quiet: Duration = .seconds(2)) async -> (bytes: [UInt8], closed: Bool) {
    await offPool {
      var bytes: [UInt8] = []
      var chunk = [UInt8](repeating: 0, count: 65_536)
      while true {
        var pfd = pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&pfd, 1, Int32(quiet.components.seconds * 1000 + quiet.components.attoseconds / 1_000_000_000_000_000))
        if ready < 0, errno == EINTR { continue }
        guard ready > 0 else { return (bytes, false) }
        let n = chunk.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, $0.count, 0) }
        if n < 0, errno == EINTR { continue }
        guard n > 0 else { return (bytes, true) }
        bytes += chunk[0..<n]
      }
    }
  }

  /// Reads until `count` whole frames arrived, the peer closed, or `quiet` passed.
  func frames(_ count: Int, quiet: Duration = .seconds(5)) async throws -> (frames: [Frame], closed: Bool) {
    var decoder = FrameDecoder(maxPayloadLength: .max)
    var buffer = ByteBuffer()
    var frames: [Frame] = []
    while frames.count < count {
      let single: (bytes: [UInt8], closed: Bool) = await offPool {
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
          var pfd = pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)
          let ready = poll(&pfd, 1, Int32(quiet.components.seconds * 1000))
          // A signal (SIGCHLD from any test's child) is neither silence nor the end, as in read().
          if ready < 0, errno == EINTR { continue }
          guard ready > 0 else { return ([], false) }
          let n = chunk.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, $0.count, 0) }
          if n < 0, errno == EINTR { continue }
          return n > 0 ? (Array(chunk[0..<n]), false) : ([], true)
        }
      }
      if single.bytes.isEmpty { return (frames, single.closed) }
      buffer.writeBytes(single.bytes)
      while let next = try decoder.next(from: &buffer) {
        if case .frame(let frame) = next { frames.append(frame) }
      }
    }
    return (frames, false)
  }

  deinit { close(fd) }
}

/// Runs blocking work on a thread of its own so that the concurrency pool keeps running.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
  try await withCheckedThrowingContinuation { continuation in
    Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
  }
}

func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
  await withCheckedContinuation { continuation in
    Thread.detachNewThread { continuation.resume(returning: body()) }
  }
}

extension Frame {
  var bytes: [UInt8] {
    var buffer = ByteBuffer()
    write(to: &buffer)
    return Array(buffer.readableBytesView)
  }

  var errorPayload: FrameErrorPayload? { type == .error ? FrameErrorPayload(payload: payload) : nil }
}
