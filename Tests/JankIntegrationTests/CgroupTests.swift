import Foundation
import JankControl
import JankJSON
import Testing

/// Cgroup limits enforced on this machine (CI runs as root): memory with OOM kills told
/// apart from crashes, pids against a fork bomb, cpu_percent throttling; and a supervisor
/// without cgroups that still runs plugins, saying why the limits are rlimits only.
@Suite struct CgroupTests {
  @Test func aPluginPastMemoryMBIsOOMKilledReportedAndRestarted() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addFaultPlugin(extra: #","limits":{"memory_mb":96},"restart":{"initial_delay_ms":20}"#)
      let info = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      #expect(info.limitsEnforced?.hasPrefix("cgroup-v") == true, "\(info.limitsEnforced ?? "nil") \(info.limitsNote ?? "")")
      #expect((info.usage?.memoryBytes ?? 0) > 0)
      // `list` leaves usage out (two cgroup reads per plugin); `get` has it.
      let listed = try await running.client.call(ControlMethods.list, ListParams())
      let inList: PluginInfo? = listed.registered.first { $0.id == id }
      #expect(inList != nil && inList?.usage == nil)
      let firstPID = Int32(try #require(info.pid))
      let directory = try #require(cgroupDirectory(of: firstPID, controller: "memory"))

      await #expect(throws: ControlError.self) {
        try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "allocate", args: ["mb": 400], timeoutMs: 20_000))
      }
      let after = try await running.restarted(id, replacing: info.pid)
      #expect(after.lastExit?.reason == .oomKilled, "\(String(describing: after.lastExit))")
      #expect(after.lastError?.contains("memory_mb") == true, "\(after.lastError ?? "")")
      #expect(after.restarts == 1)
      // The dead process's cgroup is gone; the new process has a fresh one.
      #expect(await eventually { !FileManager.default.fileExists(atPath: directory) })
    }
  }

  /// Over its memory before it even printed its handshake: still oom-killed, not a bad handshake.
  @Test func aPluginOOMKilledWhileStartingIsReportedAsOOMKilled() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addPlugin(
        "hungry", script: "export FAULT_ALLOCATE_MB_AT_START=400\nexec '\(Binaries.faultPlugin)' \"$@\"",
        extra: #","limits":{"memory_mb":64},"restart":{"policy":"never"}"#)
      let info = try? await running.client.call(ControlMethods.register, RegisterParams(id: id))
      let now = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(now.lastExit?.reason == .oomKilled, "\(String(describing: info)) \(String(describing: now.lastExit)) \(now.lastError ?? "")")
      #expect(now.lastError?.contains("memory_mb") == true, "\(now.lastError ?? "")")
    }
  }

  @Test func aForkBombIsHeldAtPidsAndThePluginSurvives() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addFaultPlugin(extra: #","limits":{"pids":40}"#)
      let info = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      let pid = Int32(try #require(info.pid))
      let directory = try #require(cgroupDirectory(of: pid, controller: "pids"))
      let bomb = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "fork-bomb", args: ["count": 500]))
      let started = Int(bomb.data["started"]?.numberValue ?? -1)
      #expect(started > 0 && started < 40, "\(bomb.data)")
      #expect(bomb.data["errno"] == .number(Double(EAGAIN)))
      let during = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(during.pid == info.pid)
      #expect((during.usage?.pids ?? 0) <= 40)
      let echo = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "echo", args: ["ok": true]))
      #expect(echo.data["ok"] == true)

      _ = try await running.client.call(ControlMethods.stop, PluginIDParams(id: id))
      // Stopping removes the cgroup, and with it every forked child.
      #expect(await eventually { !FileManager.default.fileExists(atPath: directory) })
      let leftovers = try await runProgram("/usr/bin/pgrep", ["-f", "^/bin/sleep 600$", "-P", "\(pid)"])
      #expect(leftovers.stdout.isEmpty)
    }
  }

  @Test func cpuPercentThrottlesABusyLoop() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addFaultPlugin(extra: #","limits":{"cpu_percent":20}"#)
      let info = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      let pid = Int32(try #require(info.pid))
      let directory = try #require(cgroupDirectory(of: pid, controller: "cpu"))
      let before = cpuSeconds(of: pid)
      _ = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "spin", args: ["ms": 2000]))
      let used = cpuSeconds(of: pid) - before
      // 20 % of one core over 2 s is 0.4 s; unthrottled it would be about 2 s.
      #expect(used < 0.8, "the plugin used \(used) s of CPU in 2 s at cpu_percent 20")
      // The cgroup's own account: the loop ran through its scheduling periods and hit the
      // quota in some (on a loaded machine the loop may not get its 20 % in every period).
      let stat = (try? String(contentsOfFile: directory + "/cpu.stat", encoding: .utf8)) ?? ""
      func counter(_ key: String) -> Int {
        stat.split(separator: "\n").first { $0.hasPrefix(key + " ") }.flatMap { Int($0.split(separator: " ")[1]) } ?? 0
      }
      let periods = counter("nr_periods")
      let throttled = counter("nr_throttled")
      #expect(periods >= 5 && throttled > 0, "cpu.stat: \(stat)")
    }
  }

  /// A SIGKILLed supervisor: its plugin dies within a second by the exec shim's PDEATHSIG
  /// (the plugin here is a shell, which sets none of its own), but what the plugin started
  /// lives on, and its (v1) cgroup stays. The next supervisor kills what is left and removes
  /// the cgroups, and never touches those of a supervisor that is still alive.
  ///
  /// Both supervisors run in cgroups of this test's own: every supervisor sweeps the folder
  /// it runs in, so in the shared one any other test's supervisor may do the sweep first
  /// (as it should), and this test would not see which one did.
  @Test func whatAKilledSupervisorLeavesIsCleanedUpByTheNextOne() async throws {
    let privateCgroups = try PrivateCgroups()
    defer { privateCgroups.remove() }
    let workspace = try Workspace()
    let shellPID = workspace.root + "/shell.pid"
    let sleepPID = workspace.root + "/sleep.pid"
    // Not exec: the shell stays the plugin's process, the fault plugin its child.
    try workspace.addPlugin(
      "hello", script: "sleep 300 & echo $! > '\(sleepPID)'; echo $$ > '\(shellPID)'; '\(Binaries.faultPlugin)' \"$@\"",
      extra: #","auto_start":true,"limits":{"memory_mb":128}"#)
    let killed = try await SupervisorProcess(workspace, cgroups: privateCgroups.folders)
    let client = try await ControlClient.connect(path: workspace.socket)
    defer { Task { await client.close() } }
    #expect(await eventually(timeout: .seconds(15)) {
      (try? await client.call(ControlMethods.get, PluginIDParams(id: "dev.test.hello")))?.status == .ready
    })
    let pid = try #require(try await client.call(ControlMethods.get, PluginIDParams(id: "dev.test.hello")).pid)
    let shell = try #require(Int((try String(contentsOfFile: shellPID, encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)))
    let sleeper = try #require(Int((try String(contentsOfFile: sleepPID, encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)))
    #expect(shell == pid)
    let pluginCgroup = try #require(cgroupDirectory(of: Int32(pid), controller: "memory"))
    let instance = (pluginCgroup as NSString).deletingLastPathComponent
    #expect((instance as NSString).lastPathComponent.hasPrefix("jank-\(killed.pid)-"), "\(instance)")
    #expect(privateCgroups.folders.contains((instance as NSString).deletingLastPathComponent), "\(instance) is not in this test's cgroups")
    // A live supervisor's folder (this test process's pid) must survive the sweep.
    let live = (instance as NSString).deletingLastPathComponent + "/jank-\(getpid())-0ddba11"
    #expect(mkdir(live, 0o755) == 0)
    defer { rmdir(live) }

    await killed.killHard()
    #expect(await eventually(timeout: .seconds(1)) { processIsGone(shell) }, "the shell plugin outlived its supervisor: no PDEATHSIG")
    #expect(!processIsGone(sleeper), "the plugin's own child is expected to outlive the supervisor")
    #expect(FileManager.default.fileExists(atPath: pluginCgroup))

    let next = try await SupervisorProcess(try Workspace(), cgroups: privateCgroups.folders)
    #expect(await eventually(timeout: .seconds(3)) { processIsGone(sleeper) }, "the orphan \(sleeper) was not killed")
    #expect(!FileManager.default.fileExists(atPath: instance), "\(instance) is still there")
    #expect(FileManager.default.fileExists(atPath: live))
    await next.terminateAndWait()
  }

  @Test func withoutCgroupsPluginsRunWithRlimitsOnlyAndSayWhy() async throws {
    let workspace = try Workspace()
    let id = try workspace.addFaultPlugin(extra: #","limits":{"memory_mb":64,"open_files":64}"#)
    let supervisor = try await SupervisorProcess(workspace, environment: ["JANK_CGROUP_ROOT": "/nonexistent/cgroup"])
    defer { supervisor.terminate() }
    let client = try await ControlClient.connect(path: workspace.socket)
    let info = try await client.call(ControlMethods.register, RegisterParams(id: id))
    #expect(info.status == .ready)
    #expect(info.limitsEnforced == "rlimit-only")
    #expect(info.limitsNote?.contains("/nonexistent/cgroup") == true, "\(info.limitsNote ?? "nil")")
    #expect(info.usage == nil)
    let pid = try #require(info.pid)
    let limits = try String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)
    #expect(LimitsTests.limit("Max open files", in: limits) == ["64", "64"])
    await client.close()
  }
}

/// The directory of `pid`'s cgroup for `controller` (v1 hierarchy, or the v2 one).
/// One fresh folder in each v1 hierarchy the supervisor uses (memory, cpu, pids), under
/// this test process's own cgroup there. No other supervisor looks inside: each sweeps only
/// the `jank-*` folders beside itself.
struct PrivateCgroups {
  let folders: [String]

  init() throws {
    let name = "test-jank-" + UUID().uuidString.prefix(8).lowercased()
    var made: [String] = []
    for controller in ["memory", "cpu", "pids"] {
      guard let parent = cgroupDirectory(of: getpid(), controller: controller), parent.hasPrefix("/sys/fs/cgroup/\(controller)") else { continue }
      let folder = parent + "/" + name
      guard mkdir(folder, 0o755) == 0 else { throw CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: folder]) }
      made.append(folder)
    }
    folders = made
  }

  /// Once the supervisors in them have ended (a v1 folder is removable when it has no
  /// processes and no children).
  func remove() {
    for folder in folders {
      for child in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] { rmdir(folder + "/" + child) }
      rmdir(folder)
    }
  }
}

func cgroupDirectory(of pid: Int32, controller: String) -> String? {
  guard let text = try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8) else { return nil }
  for line in text.split(separator: "\n") {
    let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
    guard parts.count == 3 else { continue }
    if parts[1].split(separator: ",").contains(Substring(controller)) {
      return "/sys/fs/cgroup/\(controller)\(parts[2])"
    }
  }
  for line in text.split(separator: "\n") where line.hasPrefix("0::") {
    let path = line.dropFirst(3)
    for mount in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] where FileManager.default.fileExists(atPath: mount + path + "/cgroup.controllers") {
      return mount + path
    }
  }
  return nil
}

/// User + system CPU time of a process, in seconds.
func cpuSeconds(of pid: Int32) -> Double {
  guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return 0 }
  let fields = stat[stat.index(after: close)...].split(separator: " ")
  // After "pid (comm)": state is field 3, utime 14 and stime 15 (1-based) → offsets 11, 12.
  guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
  return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}
