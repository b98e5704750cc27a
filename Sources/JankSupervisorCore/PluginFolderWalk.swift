import Foundation
import Glibc
import Synchronization

/// Walks a plugin's folder the way a hostile plugin cannot abuse: symbolic links are never
/// followed (a plugin can make `src/a -> .` in its own folder at run time), a folder reached
/// twice by (device, inode) is walked once, and depth and folder count are capped. Build
/// output and dot-folders are skipped.
///
/// Before, the source watcher followed links: two links to `.` made 2^N folders, and the walk
/// held the supervisor (every control call and the watchdog ping behind it) for as long as
/// paths fit PATH_MAX.
struct PluginFolderWalk {
  static let maximumDepth = 32
  static let maximumFolders = 10_000

  /// Relative paths ("" for the folder itself) of the folders to look at.
  private(set) var folders: [String] = []
  /// Relative paths of the regular files found, unsorted.
  private(set) var files: [String] = []
  /// What was left out, as a sentence naming the path (nil when nothing was).
  private(set) var problem: String?

  /// The last walk's problem per plugin folder, for `list` and `get` to show (a walk runs on
  /// every fingerprint and every re-watch; the answer is kept rather than walked again).
  private static let problems = Mutex<[String: String]>([:])

  /// What the last walk of `directory` could not look at, or nil.
  static func problem(in directory: String) -> String? {
    problems.withLock { $0[directory] }
  }

  init(directory: String, ignoredFolders: Set<String>) {
    var visited = Set<FileIdentity>()
    var stack: [(path: String, depth: Int)] = [("", 0)]
    while let (relative, depth) = stack.popLast() {
      let absolute = relative.isEmpty ? directory : directory + "/" + relative
      guard folders.count < Self.maximumFolders else {
        problem = problem ?? "more than \(Self.maximumFolders) folders under \(directory); '\(relative)' and what follows were not looked at"
        break
      }
      // Opened without following a link, so what is listed is the folder that was checked.
      guard let listing = DirectoryListing(path: absolute), visited.insert(listing.identity).inserted else { continue }
      folders.append(relative)
      for (name, kind) in listing.entries {
        let path = relative.isEmpty ? name : relative + "/" + name
        switch kind {
        case .directory:
          guard !ignoredFolders.contains(name), !name.hasPrefix(".") else { continue }
          guard depth + 1 <= Self.maximumDepth else {
            problem = problem ?? "'\(path)' is more than \(Self.maximumDepth) folders deep under \(directory); it was not looked at"
            continue
          }
          stack.append((path, depth + 1))
        case .regular:
          files.append(path)
        case .link:
          // Never followed, and said so: a user who linked a source in wonders why a change
          // to it does not rebuild the plugin.
          problem = problem ?? "'\(path)' is a symbolic link, which is never followed"
        case .other:
          continue  // sockets, fifos, devices: never sources
        }
      }
    }
    let found = problem
    Self.problems.withLock { $0[directory] = found }
  }
}

/// A file's identity: two paths with the same one are the same file.
struct FileIdentity: Hashable, Sendable {
  var device: UInt64
  var inode: UInt64

  init(_ info: stat) {
    device = UInt64(info.st_dev)
    inode = UInt64(info.st_ino)
  }
}

/// One folder's entries, read with readdir: the kind of each comes from `d_type` (one lstat
/// per entry only where the file system does not say), which a `list` over a thousand plugin
/// folders would otherwise pay for every file. The folder is opened with O_NOFOLLOW: a link
/// is never listed as the folder it points to.
struct DirectoryListing {
  enum Kind { case directory, regular, link, other }

  let identity: FileIdentity
  private(set) var entries: [(name: String, kind: Kind)] = []

  init?(path: String) {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { return nil }
    var info = stat()
    guard fstat(fd, &info) == 0, let stream = fdopendir(fd) else {
      close(fd)
      return nil
    }
    defer { closedir(stream) }  // closes fd too
    identity = FileIdentity(info)
    while let entry = readdir(stream) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { bytes in
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
      }
      guard name != ".", name != ".." else { continue }
      let kind: Kind
      switch Int32(entry.pointee.d_type) {
      case Int32(DT_DIR): kind = .directory
      case Int32(DT_REG): kind = .regular
      case Int32(DT_LNK): kind = .link
      case Int32(DT_UNKNOWN):
        var entryInfo = stat()
        guard fstatat(fd, name, &entryInfo, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
        switch entryInfo.st_mode & S_IFMT {
        case S_IFDIR: kind = .directory
        case S_IFREG: kind = .regular
        case S_IFLNK: kind = .link
        default: kind = .other
        }
      default: kind = .other
      }
      entries.append((name, kind))
    }
  }
}
