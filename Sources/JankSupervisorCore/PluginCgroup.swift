import Foundation
import Glibc
import JankControl

/// The cgroup of one plugin process (one per launch, so its OOM counter starts at zero):
/// created with the plugin's limits before spawn, joined by the child before exec, asked
/// after an exit whether the kernel's OOM killer struck, killed and removed at the end.
final class PluginCgroup: Sendable {
  /// One directory for v2, one per controller for v1.
  let directories: [String: String]
  let version: Int

  private init(directories: [String: String], version: Int) {
    self.directories = directories
    self.version = version
  }

  /// Creates `name` under the hierarchy with the limits applied; nil when there is no
  /// hierarchy. Throws when the cgroup exists but the limits cannot be written.
  static func create(name: String, in hierarchy: CgroupHierarchy, limits: PluginLimits) throws(CgroupError) -> PluginCgroup? {
    let cgroup: PluginCgroup
    switch hierarchy {
    case .unavailable:
      return nil
    case .v2(let base):
      cgroup = PluginCgroup(directories: ["": base + "/" + name], version: 2)
    case .v1(let bases):
      cgroup = PluginCgroup(directories: bases.mapValues { $0 + "/" + name }, version: 1)
    }
    for directory in Set(cgroup.directories.values) {
      guard mkdir(directory, 0o755) == 0 || errno == EEXIST else {
        throw CgroupError("cannot create the plugin's cgroup \(directory): \(String(cString: strerror(errno)))")
      }
    }
    do {
      try cgroup.apply(limits)
    } catch {
      cgroup.remove()
      throw error
    }
    return cgroup
  }

  private func directory(_ controller: String) -> String? {
    version == 2 ? directories[""] : directories[controller]
  }

  private func apply(_ limits: PluginLimits) throws(CgroupError) {
    if let mb = limits.memoryMB, let dir = directory("memory") {
      let bytes = String(UInt64(mb) << 20)
      if version == 2 {
        try CgroupFile.write(bytes, to: dir + "/memory.max")
        // No swap to hide in, and an OOM kills the whole plugin, not one of its threads' victims.
        if access(dir + "/memory.swap.max", W_OK) == 0 { try CgroupFile.write("0", to: dir + "/memory.swap.max") }
        try CgroupFile.write("1", to: dir + "/memory.oom.group")
      } else {
        try CgroupFile.write(bytes, to: dir + "/memory.limit_in_bytes")
        if access(dir + "/memory.memsw.limit_in_bytes", W_OK) == 0 { try CgroupFile.write(bytes, to: dir + "/memory.memsw.limit_in_bytes") }
      }
    }
    if let percent = limits.cpuPercent, let dir = directory("cpu") {
      let quota = percent * 1000  // of a 100 ms period; 100 % is one full core
      if version == 2 {
        try CgroupFile.write("\(quota) 100000", to: dir + "/cpu.max")
      } else {
        try CgroupFile.write("100000", to: dir + "/cpu.cfs_period_us")
        try CgroupFile.write("\(quota)", to: dir + "/cpu.cfs_quota_us")
      }
    }
    if let pids = limits.pids, let dir = directory("pids") {
      try CgroupFile.write("\(pids)", to: dir + "/pids.max")
    }
  }

  /// Opened `cgroup.procs` files for the exec shim; the caller closes them after spawn.
  func openProcsFiles() throws(CgroupError) -> [Int32] {
    var fds: [Int32] = []
    for directory in Set(directories.values).sorted() {
      let fd = open(directory + "/cgroup.procs", O_WRONLY | O_CLOEXEC)
      guard fd >= 0 else {
        let reason = String(cString: strerror(errno))
        fds.forEach { close($0) }
        throw CgroupError("cannot open \(directory)/cgroup.procs: \(reason)")
      }
      fds.append(fd)
    }
    return fds
  }

  /// How many processes the kernel's OOM killer killed in this cgroup.
  var oomKills: Int {
    guard let dir = directory("memory") else { return 0 }
    let file = version == 2 ? dir + "/memory.events" : dir + "/memory.oom_control"
    return CgroupFile.counter("oom_kill", in: file) ?? 0
  }

  var memoryBytes: Int? {
    guard let dir = directory("memory") else { return nil }
    let text = CgroupFile.read(dir + (version == 2 ? "/memory.current" : "/memory.usage_in_bytes"))
    return text.flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
  }

  var pidsCurrent: Int? {
    guard let dir = directory("pids") else { return nil }
    return CgroupFile.read(dir + "/pids.current").flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
  }

  /// `cpu.stat` as numbers (v1: nr_periods, nr_throttled, throttled_time; v2: usage_usec…).
  var cpuStat: [String: Int] {
    guard let dir = directory("cpu"), let text = CgroupFile.read(dir + "/cpu.stat") else { return [:] }
    var stat: [String: Int] = [:]
    for line in text.split(separator: "\n") {
      let parts = line.split(separator: " ")
      if parts.count == 2, let value = Int(parts[1]) { stat[String(parts[0])] = value }
    }
    return stat
  }

  /// Kills everything left in the cgroup (children that escaped the process group too) and
  /// removes it. Killed processes leave a v1 cgroup only once reaped (orphans by init, which
  /// can take a second), so a busy cgroup is retried in the background, never by blocking
  /// a thread of the concurrency pool.
  func remove() {
    var busy: [String] = []
    for directory in Set(directories.values) {
      if version == 2, access(directory + "/cgroup.kill", W_OK) == 0 {
        try? CgroupFile.write("1", to: directory + "/cgroup.kill")
      } else {
        for pid in (CgroupFile.read(directory + "/cgroup.procs") ?? "").split(separator: "\n").compactMap({ Int32($0) }) {
          kill(pid, SIGKILL)
        }
      }
      if rmdir(directory) != 0, errno == EBUSY { busy.append(directory) }
    }
    guard !busy.isEmpty else { return }
    Task.detached { [busy] in
      var left = busy
      for _ in 0..<400 where !left.isEmpty {
        try? await Task.sleep(for: .milliseconds(25))
        left.removeAll { rmdir($0) == 0 || errno == ENOENT }
      }
    }
  }
}
