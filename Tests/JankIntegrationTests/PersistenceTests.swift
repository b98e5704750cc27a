import Foundation
import JankControl
import JankSupervisorCore
import Logging
import Testing

/// Registrations and the operator's intent survive a supervisor restart.
@Suite struct PersistenceTests {
  static func supervisor(_ workspace: Workspace) -> Supervisor {
    Supervisor(
      configuration: SupervisorConfiguration(pluginsDirectory: workspace.plugins, stateDirectory: workspace.state, socketPath: workspace.socket),
      logger: testLogger)
  }

  @Test func aRestartedSupervisorRestoresRegistrationsAndStartsWhatShouldRun() async throws {
    let workspace = try Workspace()
    let hello = try workspace.addHelloWorld("hello")
    let parked = try workspace.addHelloWorld("parked", extra: #","auto_start":true"#)
    let first = Self.supervisor(workspace)
    _ = try await first.register(id: hello)
    _ = try await first.register(id: parked)
    _ = try await first.stop(id: parked)
    let oldPID = try #require(try await first.get(id: hello).pid)
    await first.stopAll()  // a supervisor shutdown, not an operator's stop
    #expect(processIsGone(oldPID))

    let second = Self.supervisor(workspace)
    await second.restoreRegistrations()
    await second.startAutoStartPlugins()
    let restored = try await second.get(id: hello)
    #expect(restored.status == .ready)
    #expect(restored.pid != oldPID)
    // Stopped by an operator: stays stopped, even though it is auto_start.
    let stillParked = try await second.get(id: parked)
    #expect(stillParked.status == .stopped)
    #expect(stillParked.desired == "stopped")
    await second.stopAll()

    let saved = try String(contentsOfFile: workspace.state + "/state.json", encoding: .utf8)
    #expect(saved.contains(hello) && saved.contains(parked))
  }

  @Test(arguments: ["{\"version\":1,\"plugins\":[{\"id\":", "", "\u{0}\u{1}binary", "[]"])
  func aCorruptStateFileIsMovedAsideAndNeverStopsTheSupervisor(_ content: String) async throws {
    let workspace = try Workspace()
    let hello = try workspace.addHelloWorld("hello", extra: #","auto_start":true"#)
    try content.write(toFile: workspace.state + "/state.json", atomically: true, encoding: .utf8)
    let supervisor = Self.supervisor(workspace)
    await supervisor.restoreRegistrations()
    await supervisor.startAutoStartPlugins()
    #expect(try await supervisor.get(id: hello).status == .ready)
    let names = try FileManager.default.contentsOfDirectory(atPath: workspace.state)
    #expect(names.contains { $0.hasPrefix("state.json.corrupt-") }, "\(names)")
    // The new state file is whole again.
    let saved = try String(contentsOfFile: workspace.state + "/state.json", encoding: .utf8)
    #expect(saved.contains(hello))
    await supervisor.stopAll()
  }
}
