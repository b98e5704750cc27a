import Foundation
import JankControl
import JankJSON
import Testing

/// rlimits from plugin.json are set in the child before exec and hold inside the plugin.
@Suite struct LimitsTests {
  @Test func openFilesPastTheLimitFailWithEMFILEAndThePluginSurvives() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addFaultPlugin(extra: #","limits":{"open_files":64,"core_dumps":false,"address_space_mb":8192}"#)
      let info = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      let pid = try #require(info.pid)
      let limits = try String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)
      #expect(Self.limit("Max open files", in: limits) == ["64", "64"])
      #expect(Self.limit("Max core file size", in: limits) == ["0", "0"])
      #expect(Self.limit("Max address space", in: limits) == ["8589934592", "8589934592"])

      let result = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "open-files", args: ["count": 200]))
      #expect(result.data["errno"] == .number(Double(EMFILE)))
      #expect((result.data["opened"]?.numberValue ?? 0) < 64)
      let after = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(after.pid == pid)
      #expect(after.status == .ready)
      #expect(after.limits?["open_files"] == 64)
    }
  }

  @Test func aPluginPastItsCPUSecondsIsKilledAsCPULimitAndRestarted() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addFaultPlugin(extra: #","limits":{"cpu_seconds":1},"restart":{"initial_delay_ms":20}"#)
      let info = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      await #expect(throws: ControlError.self) {
        try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "spin", args: ["ms": 5000], timeoutMs: 10_000))
      }
      let after = try await running.restarted(id, replacing: info.pid)
      #expect(after.lastExit?.reason == .cpuLimit)
      #expect(after.lastExit?.signal == Int(SIGXCPU))
      #expect(after.lastError?.contains("cpu_seconds") == true, "\(after.lastError ?? "")")
    }
  }

  /// The soft and hard values of one row of /proc/<pid>/limits.
  static func limit(_ name: String, in table: String) -> [String] {
    guard let line = table.split(separator: "\n").first(where: { $0.hasPrefix(name) }) else { return [] }
    return line.dropFirst(name.count).split(separator: " ").prefix(2).map(String.init)
  }
}
