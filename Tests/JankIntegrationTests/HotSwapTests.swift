import Foundation
import JankControl
import JankJSON
import Synchronization
import Testing

/// A rebuild swaps a running plugin onto its new binary with zero failed calls.
@Suite struct HotSwapTests {
  @Test func threeSwapsUnderSteadyLoadFailNoCallAndTheNewCodeAnswers() async throws {
    try await withSupervisor { workspace, running in
      let (id, writeVersion) = try workspace.addVersionedPlugin("swappable")
      try writeVersion(1)
      let first = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      #expect(first.status == .ready)

      let keepGoing = Flag()
      let outcomes = Outcomes()
      // Whatever ends the test, an early failure too, ends the load: else it runs hot forever.
      defer { keepGoing.clear() }
      let load = (0..<4).map { worker in
        Task {
          while keepGoing.isSet {
            do {
              // Calls that take a while, so some are in flight on the old process at each swap.
              let result = try await running.client.call(
                ControlMethods.execute, ExecuteParams(id: id, method: "sleep", args: ["ms": .number(Double(10 + worker * 5))]))
              outcomes.record(result.data["slept_ms"] == nil ? "no slept_ms in \(result.data)" : nil)
            } catch {
              outcomes.record("\(error)")
            }
          }
        }
      }
      var pids: [Int] = [try #require(first.pid)]
      for version in 2...4 {
        try await Task.sleep(for: .milliseconds(300))
        try writeVersion(version)
        let swapped = try await running.client.call(ControlMethods.build, PluginIDParams(id: id))
        #expect(swapped.status == .ready || swapped.status == .running)
        pids.append(try #require(swapped.pid))
        let answer = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "version"))
        #expect(answer.data["version"] == .string("\(version)"))
      }
      try await Task.sleep(for: .milliseconds(300))
      keepGoing.clear()
      for task in load { await task.value }

      let result = outcomes.snapshot
      print("hot swap: \(result.ok) calls answered, \(result.failures.count) failed, pids \(pids)")
      #expect(result.failures.isEmpty, "\(result.failures.prefix(5))")
      #expect(result.ok > 20)
      #expect(Set(pids).count == 4)
      // The old processes are gone, not left running beside the new one.
      for pid in pids.dropLast() { #expect(await eventually { processIsGone(pid) }) }
      let info = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(info.restarts == 0)
    }
  }
}

extension Workspace {
  /// A plugin built from `src/run.sh` (a script that runs the fault plugin with
  /// FAULT_VERSION set, which its `version` method returns) and the function that writes
  /// that source for a version. Its build appends a line to `<name>.builds.log` in the
  /// workspace (outside the folder: a build may run in a copy of it), and
  /// fails, saying so on stderr, while the source contains the word BROKEN.
  func addVersionedPlugin(_ name: String) throws -> (id: String, write: (Int) throws -> Void) {
    let build = "if grep -q BROKEN src/run.sh; then echo 'src/run.sh is marked BROKEN' >&2; exit 1; fi; "
      + "cp src/run.sh bin/run && chmod +x bin/run && echo built >> '\(root)/\(name).builds.log'"
    let id = try addPlugin(name, script: nil, extra: #","build":{"command":["sh","-c","\#(build)"],"sources":["src/**"]}"#)
    let source = plugins + "/" + name + "/src/run.sh"
    try FileManager.default.createDirectory(atPath: plugins + "/" + name + "/src", withIntermediateDirectories: true)
    return (id, { version in
      try "#!/bin/sh\nexport FAULT_VERSION=\(version)\nexec '\(Binaries.faultPlugin)' \"$@\"\n".write(toFile: source, atomically: true, encoding: .utf8)
    })
  }

  /// Makes the versioned plugin's next build fail.
  func breakVersionedPlugin(_ name: String) throws {
    try "#!/bin/sh\n# BROKEN\n".write(toFile: plugins + "/" + name + "/src/run.sh", atomically: true, encoding: .utf8)
  }

  /// How many builds of the versioned plugin succeeded.
  func successfulBuilds(of name: String) -> Int {
    ((try? String(contentsOfFile: root + "/" + name + ".builds.log", encoding: .utf8)) ?? "").split(separator: "\n").count
  }
}

final class Outcomes: Sendable {
  private let state = Mutex<(ok: Int, failures: [String])>((0, []))
  func record(_ failure: String?) {
    state.withLock { if let failure { $0.failures.append(failure) } else { $0.ok += 1 } }
  }
  var snapshot: (ok: Int, failures: [String]) { state.withLock { $0 } }
}

@Suite struct SourceWatchTests {
  @Test func savingASourceFileRebuildsAndSwapsTheRunningPlugin() async throws {
    try await withSupervisor { workspace, running in
      let (id, save) = try workspace.addVersionedPlugin("watched")
      try save(1)
      let first = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      #expect(first.status == .ready)
      func version() async -> JSONValue? {
        try? await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "version")).data["version"]
      }
      #expect(await version() == "1")

      try save(2)
      #expect(await eventually(timeout: .seconds(10)) { await version() == "2" })
      let after = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(after.pid != first.pid)
      #expect(after.restarts == 0)
      // A file outside the plugin's sources changes nothing.
      try "notes".write(toFile: workspace.plugins + "/watched/notes.txt", atomically: true, encoding: .utf8)
      try await Task.sleep(for: .seconds(1))
      #expect(try await running.client.call(ControlMethods.get, PluginIDParams(id: id)).pid == after.pid)
    }
  }

  /// An editor's save or a checkout is many events; the supervisor rebuilds once they are
  /// quiet, not once per event.
  @Test func aBurstOfSavesIsOneRebuild() async throws {
    try await withSupervisor { workspace, running in
      let (id, save) = try workspace.addVersionedPlugin("bursty")
      try save(1)
      _ = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      #expect(workspace.successfulBuilds(of: "bursty") == 1)
      // Five saves 40 ms apart: well inside the 300 ms quiet period.
      for version in 2...6 {
        try save(version)
        try await Task.sleep(for: .milliseconds(40))
      }
      #expect(await eventually(timeout: .seconds(10)) {
        (try? await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "version")).data["version"]) == "6"
      })
      // Nothing more is pending: still one rebuild a second later.
      try await Task.sleep(for: .seconds(1))
      #expect(workspace.successfulBuilds(of: "bursty") == 2)
    }
  }

  /// A source change that does not build leaves the running process serving, and says why
  /// in `last_error` with the build log's tail; the next good save swaps as usual.
  @Test func aFailedRebuildAfterASourceChangeLeavesTheOldProcessServing() async throws {
    try await withSupervisor { workspace, running in
      let (id, save) = try workspace.addVersionedPlugin("fragile")
      try save(1)
      let first = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      #expect(first.status == .ready)

      try workspace.breakVersionedPlugin("fragile")
      #expect(await eventually(timeout: .seconds(10)) {
        (try? await running.client.call(ControlMethods.get, PluginIDParams(id: id)))?.lastError?.contains("marked BROKEN") == true
      })
      let broken = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(broken.pid == first.pid)
      #expect(broken.status == .ready)
      #expect(broken.lastError?.contains("build of \(id) failed") == true, "\(broken.lastError ?? "")")
      let still = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "version"))
      #expect(still.data["version"] == "1")
      let buildLog = try await running.client.call(ControlMethods.logs, LogsParams(id: id, tail: 20, source: "build"))
      #expect(buildLog.lines.contains { $0.contains("marked BROKEN") }, "\(buildLog.lines)")

      try save(3)
      #expect(await eventually(timeout: .seconds(10)) {
        (try? await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "version")).data["version"]) == "3"
      })
      let fixed = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(fixed.lastError == nil)
      #expect(fixed.pid != first.pid)
    }
  }
}
