import Crypto
import Foundation
import Glibc
import Synchronization

/// What a plugin's binary was built from (design §9): SHA-256 over its source files, in
/// sorted order with their relative paths, and its build command. Recorded next to the
/// binary (`bin/.jank-build.json`) after each successful build; a plugin whose sources hash
/// differently is `source_only` and is rebuilt before it starts.
public enum BuildFingerprint {
  public struct Record: Codable, Sendable, Equatable {
    public var sha256: String
    public var command: [String]
    public var builtAt: String

    enum CodingKeys: String, CodingKey { case sha256, command, builtAt = "built_at" }
  }

  /// Folders that hold build output or tooling state, never sources.
  static let ignoredFolders: Set<String> = ["bin", ".build", ".gopath", ".git", ".jank", "node_modules"]

  public static func recordPath(manifest: PluginManifest, directory: String) -> String {
    ((directory + "/" + manifest.binary) as NSString).deletingLastPathComponent + "/.jank-build.json"
  }

  /// The hash of the plugin's sources now: its build command, then each source file's
  /// relative path, size and SHA-256. A file's digest is cached by its identity, size and
  /// times, so `list` re-reads only what changed; a large file is hashed in chunks, never
  /// read whole.
  public static func compute(manifest: PluginManifest, directory: String, plan: BuildPlan) -> String {
    var hasher = SHA256()
    for word in plan.command {
      hasher.update(data: Data(word.utf8))
      hasher.update(data: [0])
    }
    for file in sourceFiles(manifest: manifest, directory: directory) {
      hasher.update(data: Data(file.utf8))
      hasher.update(data: [0])
      if let (size, digest) = FileDigests.shared.digest(of: directory + "/" + file) {
        hasher.update(data: Data("\(size)\u{0}\(digest)".utf8))
        hasher.update(data: [0])
      }
    }
    return hexDigits(hasher.finalize())
  }

  /// Relative paths of the plugin's source files, sorted: those matching plugin.json's
  /// `build.sources` globs, or every file but plugin.json and build output. Links are never
  /// followed (see `PluginFolderWalk`).
  static func sourceFiles(manifest: PluginManifest, directory: String) -> [String] {
    let patterns = manifest.build?.sources ?? []
    // What a build writes is never a source, wherever it lives: a binary at the folder's root
    // (e.g. a Makefile's `run`) would otherwise change the hash with every build.
    let record = relative(recordPath(manifest: manifest, directory: directory), to: directory)
    let outputs: Set<String> = Set([manifest.binary, manifest.binary + ".jank-new", record].map(normalized))
    let walk = PluginFolderWalk(directory: directory, ignoredFolders: ignoredFolders)
    // Without FNM_PATHNAME `*` also crosses '/': "Sources/**" and "*.go" mean what they say.
    return walk.files.filter { path in
      path != "plugin.json" && !outputs.contains(path) && (patterns.isEmpty || patterns.contains(where: { fnmatch($0, path, 0) == 0 }))
    }.sorted()
  }

  /// "./bin//run" → "bin/run": paths as the folder walk spells them.
  static func normalized(_ path: String) -> String {
    path.split(separator: "/").filter { $0 != "." && !$0.isEmpty }.joined(separator: "/")
  }

  private static func relative(_ path: String, to directory: String) -> String {
    path.hasPrefix(directory + "/") ? String(path.dropFirst(directory.count + 1)) : path
  }

  /// A record names every source with its digest; a million-file folder is refused by the walk
  /// long before its record could reach this.
  private static let records = ParsedFileCache<Record?>(maxBytes: 16 << 20)

  /// The record of the binary's last build; nil when there is none or it cannot be trusted
  /// (not a regular file, too big, not a record), so the plugin counts as needing a build.
  public static func recorded(manifest: PluginManifest, directory: String) -> Record? {
    let path = recordPath(manifest: manifest, directory: directory)
    return records.value(of: path) { try? JSONDecoder().decode(Record.self, from: $0) } refuse: { _ in nil } ?? nil
  }

  static func write(_ record: Record, manifest: PluginManifest, directory: String) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(record).write(to: URL(fileURLWithPath: recordPath(manifest: manifest, directory: directory)), options: .atomic)
  }

  /// True when the plugin has a build and its binary is missing or was built from other
  /// sources (or by hand, with no record).
  public static func needsBuild(manifest: PluginManifest, directory: String) -> Bool {
    guard let plan = BuildPlan.plan(for: manifest, directory: directory) else { return false }
    guard access(directory + "/" + manifest.binary, X_OK) == 0 else { return true }
    return recorded(manifest: manifest, directory: directory)?.sha256 != compute(manifest: manifest, directory: directory, plan: plan)
  }
}

/// SHA-256 of source files, remembered by (device, inode, size, mtime, ctime): a file that
/// changed in any way a build could see gets a new key.
final class FileDigests: Sendable {
  static let shared = FileDigests()

  private typealias Key = FileVersion

  private let cache = Mutex<[String: (key: Key, digest: String)]>([:])
  /// More entries than this and the cache starts over (a folder of a thousand plugins of
  /// ten files each fits).
  private static let capacity = 50_000

  /// The file's size and digest; nil when it cannot be read as a regular file.
  func digest(of path: String) -> (Int64, String)? {
    // A file unchanged since it was hashed needs no open: `list` over a thousand plugins
    // costs one lstat per source file.
    var info = stat()
    if lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, let cached = cache.withLock({ $0[path] }), cached.key == Key(info) {
      return (cached.key.size, cached.digest)
    }
    // O_NONBLOCK: a file swapped for a fifo after the walk must not block the open.
    let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    return digest(ofOpenFile: fd, path: path)
  }

  /// The same for a file already open (read from its start; `path` keys the cache): what is
  /// hashed is what that descriptor holds, whatever the path names by now.
  func digest(ofOpenFile fd: Int32, path: String) -> (Int64, String)? {
    var info = stat()
    guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
    let key = Key(info)
    if let cached = cache.withLock({ $0[path] }), cached.key == key { return (key.size, cached.digest) }
    var hasher = SHA256()
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    var offset: off_t = 0
    while true {
      let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
      if n < 0, errno == EINTR { continue }
      guard n > 0 else { break }
      offset += off_t(n)
      hasher.update(data: buffer[0..<n])
    }
    let digest = hexDigits(hasher.finalize())
    cache.withLock { cache in
      if cache.count >= Self.capacity { cache.removeAll(keepingCapacity: true) }
      cache[path] = (key, digest)
    }
    return (key.size, digest)
  }
}

/// Lowercase hex of a digest. Not `String(format: "%02x")` per byte: on Linux that costs
/// microseconds a byte, and a `list` over a thousand buildable plugins formats 64 000 bytes.
func hexDigits<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> String {
  let digits = Array("0123456789abcdef".utf8)
  var text: [UInt8] = []
  text.reserveCapacity(64)
  for byte in bytes {
    text.append(digits[Int(byte >> 4)])
    text.append(digits[Int(byte & 0x0f)])
  }
  return String(decoding: text, as: UTF8.self)
}
