import Foundation
import Glibc
@testable import JankSupervisorCore
import Testing

/// This build machine's cgroup v2 has no controllers (its memory, cpu and pids are v1), so
/// enforcement under v2 cannot be shown here; this checks what the v2 code writes and reads,
/// on a folder laid out like a plugin's v2 cgroup (regular files where cgroupfs has its
/// interface files). CgroupTests prove enforcement on the v1 hierarchies.
@Suite struct CgroupV2FilesTests {
  static let interfaceFiles = [
    "memory.max", "memory.swap.max", "memory.oom.group", "memory.events", "memory.current", "cpu.max", "pids.max",
    "pids.current", "cgroup.procs", "cgroup.kill",
  ]

  func fakeV2Cgroup(named name: String) throws -> (base: String, directory: String) {
    let base = "/tmp/jank-cgv2-\(UUID().uuidString.prefix(8))"
    let directory = base + "/" + name
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    for file in Self.interfaceFiles { FileManager.default.createFile(atPath: directory + "/" + file, contents: nil) }
    return (base, directory)
  }

  func contents(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "<missing>" }

  @Test func limitsBecomeV2InterfaceValuesAndOOMKillsAreReadFromMemoryEvents() throws {
    let (base, directory) = try fakeV2Cgroup(named: "dev.t.v2.1")
    defer { try? FileManager.default.removeItem(atPath: base) }
    var limits = PluginLimits()
    limits.memoryMB = 96
    limits.cpuPercent = 20
    limits.pids = 32
    let cgroup = try #require(try PluginCgroup.create(name: "dev.t.v2.1", in: .v2(base: base), limits: limits))

    #expect(contents(directory + "/memory.max") == "\(96 << 20)")
    #expect(contents(directory + "/memory.swap.max") == "0")
    // An OOM kill takes the whole plugin, not one process of it.
    #expect(contents(directory + "/memory.oom.group") == "1")
    #expect(contents(directory + "/cpu.max") == "20000 100000")
    #expect(contents(directory + "/pids.max") == "32")

    #expect(cgroup.oomKills == 0)
    try "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n".write(toFile: directory + "/memory.events", atomically: false, encoding: .utf8)
    #expect(cgroup.oomKills == 1)
    try "12345678\n".write(toFile: directory + "/memory.current", atomically: false, encoding: .utf8)
    #expect(cgroup.memoryBytes == 12_345_678)

    // The end: everything in the cgroup is killed at once through cgroup.kill.
    cgroup.remove()
    #expect(contents(directory + "/cgroup.kill") == "1")
  }

  @Test func aLimitThatCannotBeWrittenIsAnErrorThatNamesTheFile() throws {
    let (base, directory) = try fakeV2Cgroup(named: "dev.t.v2.2")
    defer { try? FileManager.default.removeItem(atPath: base) }
    try FileManager.default.removeItem(atPath: directory + "/pids.max")  // as if the pids controller were off
    var limits = PluginLimits()
    limits.pids = 8
    #expect {
      _ = try PluginCgroup.create(name: "dev.t.v2.2", in: .v2(base: base), limits: limits)
    } throws: { error in
      "\(error)".contains(directory + "/pids.max")
    }
  }

  /// cgroup v2's "no internal processes" rule: before plugins get cgroups beside it, the
  /// supervisor moves itself into a `supervisor` leaf and enables the controllers.
  @Test func theSupervisorMovesIntoALeafAndEnablesTheControllers() throws {
    let base = "/tmp/jank-cgv2-\(UUID().uuidString.prefix(8))"
    defer { try? FileManager.default.removeItem(atPath: base) }
    try FileManager.default.createDirectory(atPath: base + "/supervisor", withIntermediateDirectories: true)
    FileManager.default.createFile(atPath: base + "/supervisor/cgroup.procs", contents: nil)
    FileManager.default.createFile(atPath: base + "/cgroup.subtree_control", contents: nil)
    guard case .success = CgroupHierarchy.prepareV2(base: base) else {
      Issue.record("prepareV2 failed on a writable tree")
      return
    }
    #expect(contents(base + "/supervisor/cgroup.procs") == "\(getpid())")
    #expect(contents(base + "/cgroup.subtree_control") == "+memory +cpu +pids")
  }
}
