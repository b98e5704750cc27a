import Foundation
import Glibc
import Synchronization

/// A build's log on disk, bounded: a build runs plugin code, and a build that prints without
/// end must cost neither the supervisor's disk nor its memory. The file keeps the first
/// `maxBytes` of output; past that, lines are counted and only the last ones are kept (at most
/// `keptBytes` of them), to be written after a line saying how much was left out, since a
/// failing build's reason is at its end. Lines that arrive after `close` are dropped.
final class BuildLogFile: Sendable {
  static let defaultMaxBytes = 8 << 20
  /// The lines quoted in a failure and in `last_error`.
  static let tailLines = 20

  private struct State {
    var fd: Int32
    var written = 0
    var omittedLines = 0
    var omittedBytes = 0
    /// The newest lines past the cap, oldest first, and their size.
    var overflow: [String] = []
    var overflowBytes = 0
    var overflowStart = 0
    /// The newest `tailLines` lines, whether or not the file kept them.
    var tail: [String] = []
  }

  private let state: Mutex<State>
  private let maxBytes: Int
  private let keptBytes: Int

  init(path: String, maxBytes: Int = defaultMaxBytes, keptBytes: Int = 1 << 20) throws {
    // O_NOFOLLOW: the log folder is the supervisor's, but never write through a planted link.
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o640)
    guard fd >= 0 else {
      throw BuildFailure(summary: "cannot write the build log at \(path): \(String(cString: strerror(errno)))", logTail: [])
    }
    state = Mutex(State(fd: fd))
    self.maxBytes = maxBytes
    self.keptBytes = keptBytes
  }

  deinit {
    state.withLock { if $0.fd >= 0 { Glibc.close($0.fd) } }
  }

  func append(_ line: String) {
    state.withLock { state in
      guard state.fd >= 0 else { return }
      state.tail.append(line)
      if state.tail.count > Self.tailLines { state.tail.removeFirst() }
      let size = line.utf8.count + 1
      if state.omittedLines == 0, state.written + size <= maxBytes {
        Self.write(state.fd, line + "\n")
        state.written += size
        return
      }
      state.omittedLines += 1
      state.omittedBytes += size
      state.overflow.append(line)
      state.overflowBytes += size
      // Drop the oldest kept lines; compact now and then rather than shift on every line.
      while state.overflowBytes > keptBytes, state.overflowStart < state.overflow.count {
        state.overflowBytes -= state.overflow[state.overflowStart].utf8.count + 1
        state.overflowStart += 1
      }
      if state.overflowStart > 1024 {
        state.overflow.removeFirst(state.overflowStart)
        state.overflowStart = 0
      }
    }
  }

  /// The newest lines, for a failure's message.
  var tail: [String] { state.withLock { $0.tail } }

  func close() {
    state.withLock { state in
      guard state.fd >= 0 else { return }
      let kept = state.overflow[state.overflowStart...]
      if state.omittedLines > kept.count {
        let left = state.omittedLines - kept.count
        Self.write(state.fd, "[jank-supervisor: \(left) lines of build output were left out here: the log keeps its first \(maxBytes >> 20) MiB and its last lines]\n")
      }
      for line in kept { Self.write(state.fd, line + "\n") }
      Glibc.close(state.fd)
      state.fd = -1
      state.overflow = []
    }
  }

  private static func write(_ fd: Int32, _ text: String) {
    var text = text
    text.withUTF8 { bytes in
      var offset = 0
      while offset < bytes.count {
        let done = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
        if done < 0, errno == EINTR { continue }
        guard done > 0 else { return }  // a full disk loses log lines, never the build
        offset += done
      }
    }
  }

  /// The last lines of a log file, reading at most its last `maxBytes`: `jankctl logs
  /// --source build` answers from a log of any size without reading it whole.
  static func lastLines(ofFile path: String, maxBytes: Int = 2 << 20) -> [String] {
    let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else { return [] }
    defer { Glibc.close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return [] }
    let start = max(0, Int(info.st_size) - maxBytes)
    var bytes = [UInt8](repeating: 0, count: Int(info.st_size) - start)
    var count = 0
    while count < bytes.count {
      let got = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + count, $0.count - count, off_t(start + count)) }
      if got < 0, errno == EINTR { continue }
      guard got > 0 else { break }
      count += got
    }
    var lines = String(decoding: bytes[..<count], as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    if start > 0, !lines.isEmpty { lines.removeFirst() }  // it began mid-line
    if lines.last == "" { lines.removeLast() }
    return lines
  }
}
