import Foundation
@testable import JankSupervisorCore
import Synchronization
import Testing

/// inotify-based change detection: renewing a plugin's watches (done on every change, to
/// pick up new folders) must not lose a change that lands meanwhile.
@Suite struct SourceWatcherTests {
  @Test func changesDuringRewatchingAreNeverLost() async throws {
    let directory = "/tmp/jank-watch-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: directory + "/src", withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let changes = Mutex(0)
    let watcher = try #require(SourceWatcher(debounce: .milliseconds(30)) { _ in changes.withLock { $0 += 1 } })
    defer { watcher.close() }
    await watcher.watch(id: "dev.t.watched", directory: directory)

    let rewatching = Task {
      while !Task.isCancelled { await watcher.watch(id: "dev.t.watched", directory: directory) }
    }
    defer { rewatching.cancel() }

    for round in 1...10 {
      let before = changes.withLock { $0 }
      try "version \(round)\n".write(toFile: directory + "/src/main.swift", atomically: true, encoding: .utf8)
      var seen = false
      for _ in 0..<100 where !seen {
        try await Task.sleep(for: .milliseconds(20))
        seen = changes.withLock { $0 } > before
      }
      #expect(seen, "change \(round) was lost while the watches were renewed")
      if !seen { break }
    }
  }

  /// close() while events flow: the descriptor's number must never be read again once
  /// something else has it. When close() closed it from another thread, the reader, between
  /// two reads, read the next owner of the number: a plugin's stdout pipe lost its handshake
  /// line, an HTTP client's socket its answer.
  @Test func aClosedWatcherNeverReadsTheDescriptorThatTakesItsNumber() async throws {
    let directory = "/tmp/jank-watch-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: directory + "/src", withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    for round in 0..<20 {
      let watcher = try #require(SourceWatcher(debounce: .milliseconds(30)) { _ in })
      await watcher.watch(id: "dev.t.busy", directory: directory)
      let writing = Mutex(true)
      let writer = Thread {
        var n = 0
        while writing.withLock({ $0 }) {
          n += 1
          try? writeBytes("\(n)", to: directory + "/src/f\(n % 8)")
        }
      }
      writer.start()
      try await Task.sleep(for: .milliseconds(5))
      let number = watcher.fd
      watcher.close()
      // Take free numbers at once, as any other thread of a supervisor would.
      var pipes: [[Int32]] = []
      for _ in 0..<8 {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { break }
        _ = write(fds[1], "x", 1)
        pipes.append(fds)
      }
      writing.withLock { $0 = false }
      try await Task.sleep(for: .milliseconds(30))
      for fds in pipes {
        var unread: Int32 = 0
        _ = ioctl(fds[0], UInt(FIONREAD), &unread)
        #expect(unread == 1, "round \(round): a byte written to fd \(fds[0]) was read by the closed watcher (its fd was \(number))")
        close(fds[0]); close(fds[1])
      }
      // The reader thread ends and releases the number. (Not read from /proc/self/fd: a
      // watcher of another test in this process may take the number at once.)
      var released = false
      for _ in 0..<100 where !released {
        released = watcher.isReleased
        if !released { try await Task.sleep(for: .milliseconds(10)) }
      }
      #expect(released, "round \(round): the watcher's inotify descriptor \(number) is still open 1 s after close()")
    }
  }
}

private func writeBytes(_ text: String, to path: String) throws {
  let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
  guard fd >= 0 else { throw POSIXError(.EIO) }
  defer { close(fd) }
  _ = text.withCString { write(fd, $0, strlen($0)) }
}
