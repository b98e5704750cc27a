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
///
/// The files sit in plugin folders, which a plugin or its build may have written, so the read
/// is one an attacker cannot stretch: a link, a FIFO or a device is refused from its lstat
/// without being opened (a FIFO would block the read for good), as is a file over `maxBytes`,
/// and the open itself is O_NOFOLLOW | O_NONBLOCK against a swap after the lstat.
final class ParsedFileCache<Value: Sendable>: Sendable {
  private let entries = Mutex<[String: (version: FileVersion, value: Value)]>([:])
  private let maxBytes: Int
  /// More entries than this and the cache starts over.
  private static var capacity: Int { 20_000 }

  init(maxBytes: Int) {
    self.maxBytes = maxBytes
  }

  /// The parsed file, or what `refuse` makes of a sentence saying why it was not read
  /// ("is a symbolic link", "is larger than 1 MiB"…); nil when there is no such file. A file
  /// that changes while it is read is remembered under its older version, so the next call
  /// reads it again.
  func value(of path: String, parse: (Data) -> Value, refuse: (String) -> Value) -> Value? {
    var info = stat()
    guard lstat(path, &info) == 0 else {
      return errno == ENOENT || errno == ENOTDIR ? nil : refuse("cannot be read: \(String(cString: strerror(errno)))")
    }
    let version = FileVersion(info)
    if let hit = entries.withLock({ $0[path] }), hit.version == version { return hit.value }
    let value: Value
    switch read(path, info) {
    case .success(let data): value = parse(data)
    case .failure(let reason): value = refuse(reason.sentence)
    }
    entries.withLock { entries in
      if entries.count >= Self.capacity { entries.removeAll(keepingCapacity: true) }
      entries[path] = (version, value)
    }
    return value
  }

  private struct Refusal: Error {
    var sentence: String
  }

  private func read(_ path: String, _ info: stat) -> Result<Data, Refusal> {
    switch info.st_mode & S_IFMT {
    case S_IFREG: break
    case S_IFLNK: return .failure(Refusal(sentence: "is a symbolic link; it must be a regular file in the plugin's folder"))
    case S_IFDIR: return .failure(Refusal(sentence: "is a folder, not a file"))
    default: return .failure(Refusal(sentence: "is not a regular file (a FIFO, socket or device)"))
    }
    guard Int(info.st_size) <= maxBytes else { return .failure(Refusal(sentence: "is larger than \(Self.describe(maxBytes))")) }
    let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else { return .failure(Refusal(sentence: "cannot be read: \(String(cString: strerror(errno)))")) }
    defer { close(fd) }
    var opened = stat()
    // Replaced between the lstat and the open: read it on the next call, from its own lstat.
    guard fstat(fd, &opened) == 0, FileIdentity(opened) == FileIdentity(info), opened.st_mode & S_IFMT == S_IFREG else {
      return .failure(Refusal(sentence: "changed while it was read; try again"))
    }
    // One byte over its size tells a file that grew since its lstat from one that did not.
    let size = Int(info.st_size)
    var bytes = [UInt8](repeating: 0, count: size + 1)
    var count = 0
    while count < bytes.count {
      let got = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + count, $0.count - count) }
      if got < 0, errno == EINTR { continue }
      guard got >= 0 else { return .failure(Refusal(sentence: "cannot be read: \(String(cString: strerror(errno)))")) }
      if got == 0 { break }
      count += got
    }
    guard count == size else { return .failure(Refusal(sentence: "changed while it was read; try again")) }
    return .success(Data(bytes[..<count]))
  }

  private static func describe(_ bytes: Int) -> String {
    bytes >= 1 << 20 && bytes % (1 << 20) == 0 ? "\(bytes >> 20) MiB" : bytes >= 1 << 10 && bytes % (1 << 10) == 0 ? "\(bytes >> 10) KiB" : "\(bytes) bytes"
  }
}
