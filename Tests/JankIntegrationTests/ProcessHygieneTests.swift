import Foundation
import JankControl
import JankSupervisorCore
import Testing

/// A thousand crash-restarts leave nothing behind in the supervisor: no file descriptor,
/// no zombie, no socket file. The real daemon runs as its own process, so what is counted
/// is its own, untouched by tests running in parallel in this one.
@Suite struct ProcessHygieneTests {
  static let plugins = 4
  static let rounds = Int(ProcessInfo.processInfo.environment["JANK_TEST_RESTART_ROUNDS"] ?? "") ?? 250

  @Test func aThousandRestartsLeakNoFileDescriptorsZombiesOrSocketFiles() async throws {
    let workspace = try Workspace()
    let restart = #","restart":{"policy":"always","initial_delay_ms":1,"max_delay_ms":1,"max_restarts":100000,"window_s":1}"#
    var ids: [String] = []
    for i in 0..<Self.plugins { ids.append(try workspace.addHelloWorld("hello\(i)", extra: restart)) }
    let supervisor = try await SupervisorProcess(workspace)
    defer { supervisor.terminate() }
    let client = try await ControlClient.connect(path: workspace.socket)
    for id in ids { _ = try await client.call(ControlMethods.register, RegisterParams(id: id)) }
    // Warm up first: thread pools, the reaper's epoll, gRPC event loops open their fds once.
    for id in ids { try await crashAndAwaitRestart(id, client) }
    let baseline = openFileDescriptors(of: supervisor.pid)

    let clock = ContinuousClock()
    let begin = clock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
      for id in ids {
        group.addTask {
          for _ in 0..<Self.rounds { try await crashAndAwaitRestart(id, client) }
        }
      }
      try await group.waitForAll()
    }
    let elapsed = clock.now - begin

    var restarts = 0
    var livePIDs: Set<Int32> = []
    for id in ids {
      let info = try await client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(info.status == .ready)
      restarts += info.restarts
      livePIDs.insert(Int32(try #require(info.pid)))
    }
    #expect(restarts == Self.plugins * (Self.rounds + 1))
    let after = openFileDescriptors(of: supervisor.pid)
    print("hygiene: \(restarts) restarts in \(elapsed); fds \(baseline.count) before, \(after.count) after")
    // A leak of one per restart would be a thousand; a few lazily opened ones are not a leak.
    #expect(after.count <= baseline.count + 4, "fds opened and kept: \(after.subtracting(baseline).sorted())")
    // Our only children are the live plugins, and none is a zombie.
    let children = childProcesses(of: supervisor.pid)
    #expect(Set(children.map(\.pid)) == livePIDs)
    #expect(children.allSatisfy { $0.state != "Z" }, "\(children)")
    // One socket file per live plugin, none left by the dead ones.
      let sockets = try socketFiles(under: workspace.state + "/run")
      #expect(sockets.count == Self.plugins, "\(sockets)")
    await client.close()
  }
}

private func crashAndAwaitRestart(_ id: String, _ client: ControlClient) async throws {
  let before = try await client.call(ControlMethods.get, PluginIDParams(id: id))
  let pid = try #require(before.pid)
  kill(pid_t(pid), SIGKILL)
  let restarted = await eventually(timeout: .seconds(10)) {
    let now = try? await client.call(ControlMethods.get, PluginIDParams(id: id))
    return now?.status == .ready && now?.pid != nil && now?.pid != pid
  }
  try #require(restarted, "plugin \(id) did not come back after SIGKILL of \(pid)")
}

func openFileDescriptors(of pid: Int32) -> Set<String> {
  let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
  return Set(names.map { name in
    let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/" + name)) ?? "?"
    return name + " -> " + target
  })
}

struct ChildEntry: Sendable, CustomStringConvertible {
  var pid: Int32
  var state: String
  var description: String { "\(pid) (\(state))" }
}

/// Direct children of a process, from /proc.
func childProcesses(of parent: Int32) -> [ChildEntry] {
  var children: [ChildEntry] = []
  for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
    guard let pid = Int32(name), let stat = try? String(contentsOfFile: "/proc/\(name)/stat", encoding: .utf8) else { continue }
    // "pid (comm) state ppid ...": comm may contain spaces, so parse after the last ')'.
    guard let close = stat.lastIndex(of: ")") else { continue }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 2, Int32(fields[1]) == parent else { continue }
    children.append(ChildEntry(pid: pid, state: String(fields[0])))
  }
  return children
}

func socketFiles(under directory: String) throws -> [String] {
  guard let walker = FileManager.default.enumerator(atPath: directory) else { return [] }
  return walker.compactMap { $0 as? String }.filter { $0.hasSuffix(".sock") }
}
