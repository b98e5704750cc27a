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
    watcher.watch(id: "dev.t.watched", directory: directory)

    let keepRewatching = Mutex(true)
    let rewatching = Thread {
      while keepRewatching.withLock({ $0 }) { watcher.watch(id: "dev.t.watched", directory: directory) }
    }
    rewatching.start()
    defer { keepRewatching.withLock { $0 = false } }

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
}
