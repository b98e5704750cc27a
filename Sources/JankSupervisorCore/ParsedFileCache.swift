import Foundation
import Glibc
import Synchronization

/// A file's version as far as a reader can tell: its identity, size and modification and
/// change times (a write, a rename over it or a chmod each give a new one).
struct FileVersion: Hashable, Sendable {
  var identity: FileIdentity
  var size: Int64
  var modified: Int
  var changed: Int

  init(_ info: stat) {
    identity = FileIdentity(info)
    size = Int64(info.st_size)
    modified = info.st_mtim.tv_sec * 1_000_000_000 + info.st_mtim.tv_nsec
    changed = info.st_ctim.tv_sec * 1_000_000_000 + info.st_ctim.tv_nsec
  }
}

/// What was parsed from small files (plugin.json, build records), remembered by the file's
/// version: a `list` over a thousand plugin folders parses only the files that changed.
final class ParsedFileCache<Value: Sendable>: Sendable {
  private let entries = Mutex<[String: (version: FileVersion, value: Value)]>([:])
  /// More entries than this and the cache starts over.
  private static var capacity: Int { 20_000 }

  /// The parsed file; nil when it cannot be read. A file that changes while it is read is
  /// remembered under its older version, so the next call reads it again.
  func value(of path: String, parse: (Data) -> Value) -> Value? {
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    let version = FileVersion(info)
    if let hit = entries.withLock({ $0[path] }), hit.version == version { return hit.value }
    guard let data = FileManager.default.contents(atPath: path) else { return nil }
    let value = parse(data)
    entries.withLock { entries in
      if entries.count >= Self.capacity { entries.removeAll(keepingCapacity: true) }
      entries[path] = (version, value)
    }
    return value
  }
}
