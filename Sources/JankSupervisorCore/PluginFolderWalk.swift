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
      var info = stat()
      guard lstat(absolute, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else { continue }
      guard visited.insert(FileIdentity(info)).inserted else { continue }
      guard folders.count < Self.maximumFolders else {
        problem = problem ?? "more than \(Self.maximumFolders) folders under \(directory); '\(relative)' and what follows were not looked at"
        break
      }
      folders.append(relative)
      guard let names = try? FileManager.default.contentsOfDirectory(atPath: absolute) else { continue }
      for name in names {
        let path = relative.isEmpty ? name : relative + "/" + name
        var entry = stat()
        guard lstat(absolute + "/" + name, &entry) == 0 else { continue }
        switch entry.st_mode & S_IFMT {
        case S_IFDIR:
          guard !ignoredFolders.contains(name), !name.hasPrefix(".") else { continue }
          guard depth + 1 <= Self.maximumDepth else {
            problem = problem ?? "'\(path)' is more than \(Self.maximumDepth) folders deep under \(directory); it was not looked at"
            continue
          }
          stack.append((path, depth + 1))
        case S_IFREG:
          files.append(path)
        default:
          continue  // links, sockets, fifos, devices: never sources, never followed
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
