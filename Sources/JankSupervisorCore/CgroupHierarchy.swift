import Foundation
import Glibc

/// Where the supervisor can put one cgroup per plugin, found once at start (design §8):
/// cgroup v2 when the supervisor's own cgroup offers the memory, cpu and pids controllers;
/// otherwise the v1 hierarchies of those controllers (hybrid machines); otherwise none, with
/// the reason, and plugins run with rlimits only.
public enum CgroupHierarchy: Sendable, Equatable {
  /// `base` is the supervisor's cgroup; it moved itself into `base/supervisor` (a leaf), so
  /// that controllers can be enabled for the plugins' sibling cgroups.
  case v2(base: String)
  /// One base directory per controller found (`memory`, `cpu`, `pids`).
  case v1(bases: [String: String])
  case unavailable(reason: String)

  public static let controllers = ["memory", "cpu", "pids"]

  /// `root` is where cgroup filesystems are mounted (`/sys/fs/cgroup`; a test points it at a
  /// missing or read-only path). `instance` keeps supervisors in one process apart.
  public static func detect(root: String, instance: String) -> CgroupHierarchy {
    let mounts = Mount.cgroupMounts(under: root)
    guard !mounts.isEmpty else {
      return .unavailable(reason: "no cgroup filesystem is mounted under \(root)")
    }
    let membership = Membership.current()
    var problems: [String] = []
    if let unified = mounts.first(where: { $0.isV2 }), var path = membership.v2 {
      // Already moved into our leaf (another supervisor in this process did it).
      if path.hasSuffix("/supervisor") { path = String(path.dropLast("/supervisor".count)) }
      let base = unified.directory(for: path)
      let available = Set(((try? String(contentsOfFile: base + "/cgroup.controllers", encoding: .utf8)) ?? "").split(separator: " ").map {
        $0.trimmingCharacters(in: .whitespacesAndNewlines)
      })
      if controllers.allSatisfy(available.contains) {
        switch prepareV2(base: base) {
        case .success: return .v2(base: base)
        case .failure(let problem): problems.append(problem.message)
        }
      } else {
        problems.append("cgroup v2 at \(base) offers [\(available.sorted().joined(separator: " "))], not memory, cpu and pids")
      }
    }
    var bases: [String: String] = [:]
    for controller in controllers {
      guard let mount = mounts.first(where: { $0.v1Controllers.contains(controller) }), let path = membership.v1[controller] else { continue }
      let parent = mount.directory(for: path)
      removeStaleInstances(in: parent)
      // The pid in the name tells a later supervisor whether this one is still alive.
      let base = parent + "/jank-\(getpid())-" + instance
      if mkdir(base, 0o755) == 0 || errno == EEXIST {
        bases[controller] = base
      } else {
        problems.append("cannot create \(base): \(String(cString: strerror(errno)))")
      }
    }
    if !bases.isEmpty { return .v1(bases: bases) }
    return .unavailable(reason: problems.isEmpty ? "no memory, cpu or pids cgroup controller under \(root)" : problems.joined(separator: "; "))
  }

  /// A SIGKILLed supervisor cannot clean up after itself: its plugins die with it
  /// (PDEATHSIG), but their cgroups stay, and so do processes the plugins started (PDEATHSIG
  /// is not inherited). For each `jank-<pid>-<instance>` folder of a supervisor that is gone,
  /// kill what is left in its plugins' cgroups and remove them. A live pid's is left alone.
  static func removeStaleInstances(in parent: String) {
    for name in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] where name.hasPrefix("jank-") {
      let parts = name.split(separator: "-")
      guard parts.count == 3, let pid = pid_t(parts[1]), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
      let directory = parent + "/" + name
      var cgroups: [String] = []
      for child in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
        var info = stat()
        if stat(directory + "/" + child, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR { cgroups.append(directory + "/" + child) }
      }
      // A killed process leaves its v1 cgroup once reaped (by init, for orphans): retry the
      // removal for up to a second, then leave the rest to the next start.
      for attempt in 0..<40 {
        for cgroup in cgroups {
          for leftover in (CgroupFile.read(cgroup + "/cgroup.procs") ?? "").split(separator: "\n").compactMap({ pid_t($0) }) {
            kill(leftover, SIGKILL)
          }
        }
        cgroups.removeAll { rmdir($0) == 0 || errno == ENOENT }
        if cgroups.isEmpty || attempt == 39 { break }
        usleep(25_000)
      }
      rmdir(directory)
    }
  }

  /// Removes this supervisor's (empty) v1 directories at shutdown.
  public func removeInstanceDirectories() {
    if case .v1(let bases) = self {
      for base in bases.values { rmdir(base) }
    }
  }

  public var name: String {
    switch self {
    case .v2: "cgroup-v2"
    case .v1: "cgroup-v1"
    case .unavailable: "rlimit-only"
    }
  }

  /// Moves the supervisor into a leaf and enables the controllers for its children
  /// (cgroup v2's "no internal processes" rule). Idempotent.
  static func prepareV2(base: String) -> Result<Void, CgroupError> {
    let leaf = base + "/supervisor"
    guard mkdir(leaf, 0o755) == 0 || errno == EEXIST else { return .failure(CgroupError("cannot create \(leaf): \(String(cString: strerror(errno)))")) }
    do {
      try CgroupFile.write("\(getpid())", to: leaf + "/cgroup.procs")
      try CgroupFile.write(controllers.map { "+" + $0 }.joined(separator: " "), to: base + "/cgroup.subtree_control")
      return .success(())
    } catch {
      return .failure(error)
    }
  }
}

struct CgroupError: Error, CustomStringConvertible {
  var message: String
  init(_ message: String) { self.message = message }
  var description: String { message }
}

enum CgroupFile {
  static func write(_ value: String, to path: String) throws(CgroupError) {
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { throw CgroupError("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    let written = value.withCString { Glibc.write(fd, $0, strlen($0)) }
    guard written == value.utf8.count else { throw CgroupError("cannot write '\(value)' to \(path): \(String(cString: strerror(errno)))") }
  }

  static func read(_ path: String) -> String? {
    try? String(contentsOfFile: path, encoding: .utf8)
  }

  /// The number after `key` in a flat-keyed file (`memory.events`, `memory.oom_control`).
  static func counter(_ key: String, in path: String) -> Int? {
    guard let text = read(path) else { return nil }
    for line in text.split(separator: "\n") {
      let parts = line.split(separator: " ")
      if parts.count == 2, parts[0] == key { return Int(parts[1]) }
    }
    return nil
  }
}

/// A cgroup filesystem from /proc/self/mountinfo.
private struct Mount {
  var root: String
  var mountPoint: String
  var isV2: Bool
  var v1Controllers: Set<String>

  /// The directory of cgroup `path` (from /proc/self/cgroup) in this mount.
  func directory(for path: String) -> String {
    let relative = root == "/" ? path : (path.hasPrefix(root) ? String(path.dropFirst(root.count)) : path)
    return mountPoint + (relative == "/" ? "" : relative)
  }

  static func cgroupMounts(under root: String) -> [Mount] {
    guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
    let prefix = root.hasSuffix("/") ? root : root + "/"
    return text.split(separator: "\n").compactMap { line in
      // id parent major:minor root mount-point options [optional...] - fstype source super-options
      let fields = line.split(separator: " ").map(String.init)
      guard let dash = fields.firstIndex(of: "-"), dash + 3 < fields.count, fields.count > 4 else { return nil }
      let type = fields[dash + 1]
      guard type == "cgroup" || type == "cgroup2" else { return nil }
      let mountPoint = fields[4]
      guard mountPoint == root || mountPoint.hasPrefix(prefix) else { return nil }
      let options = Set(fields[dash + 3].split(separator: ",").map(String.init))
      return Mount(root: fields[3], mountPoint: mountPoint, isV2: type == "cgroup2", v1Controllers: type == "cgroup" ? options : [])
    }
  }
}

/// This process's cgroups from /proc/self/cgroup.
extension CgroupHierarchy {
  /// Whether process `pid` runs in one of this supervisor's plugin cgroups, or in one a plugin
  /// made below its own: the control channel refuses those, whatever their uid. Paths are
  /// compared as /proc shows them (relative to the cgroup root). nil when it cannot be told:
  /// no cgroups, or the process is gone.
  public func holdsPlugin(_ pid: pid_t) -> Bool? {
    guard let peer = Membership.of("\(pid)") else { return nil }
    let mine = Membership.current()
    // Strictly below `base`: a process in `base` itself (a shell beside the supervisor) is not.
    func below(_ path: String, _ base: String) -> Bool {
      let prefix = base.hasSuffix("/") ? base : base + "/"
      return path.hasPrefix(prefix) && path.count > prefix.count
    }
    switch self {
    case .v2:
      // Plugins are siblings of the supervisor's own leaf, `<base>/supervisor`.
      guard let own = mine.v2, own.hasSuffix("/supervisor"), let theirs = peer.v2 else { return nil }
      let base = String(own.dropLast("/supervisor".count))
      return below(theirs, base) && theirs != own && !below(theirs, own)
    case .v1(let bases):
      for (controller, base) in bases.sorted(by: { $0.key < $1.key }) {
        guard let own = mine.v1[controller], let theirs = peer.v1[controller] else { continue }
        // Plugins are children of `<own>/jank-<pid>-<instance>`.
        return below(theirs, (own == "/" ? "" : own) + "/" + (base as NSString).lastPathComponent)
      }
      return nil
    case .unavailable:
      return nil
    }
  }
}

private struct Membership {
  var v2: String?
  var v1: [String: String] = [:]

  static func current() -> Membership {
    of("self") ?? Membership()
  }

  /// What /proc/PID/cgroup says; nil when the process is gone.
  static func of(_ process: String) -> Membership? {
    var membership = Membership()
    guard let text = try? String(contentsOfFile: "/proc/\(process)/cgroup", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") {
      let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
      guard parts.count == 3 else { continue }
      if parts[0] == "0", parts[1].isEmpty {
        membership.v2 = parts[2]
      } else {
        for controller in parts[1].split(separator: ",") { membership.v1[String(controller)] = parts[2] }
      }
    }
    return membership
  }
}
