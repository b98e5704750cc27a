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

/// A state file that exists but cannot be read is never taken for an empty state and
/// overwritten: it is moved aside, or, when that fails too, left alone and not saved over.
@Suite struct UnreadableStateFileTests {
  @Test func aDirectoryInPlaceOfTheStateFileIsMovedAsideWithItsContents() async throws {
    let workspace = try Workspace()
    let hello = try workspace.addHelloWorld("hello", extra: #","auto_start":true"#)
    let statePath = workspace.state + "/state.json"
    try FileManager.default.createDirectory(atPath: statePath, withIntermediateDirectories: true)
    try "precious".write(toFile: statePath + "/keep", atomically: true, encoding: .utf8)
    let supervisor = PersistenceTests.supervisor(workspace)
    await supervisor.restoreRegistrations()
    await supervisor.startAutoStartPlugins()
    #expect(try await supervisor.get(id: hello).status == .ready)
    await supervisor.stopAll()
    let aside = try FileManager.default.contentsOfDirectory(atPath: workspace.state).filter { $0.hasPrefix("state.json.corrupt-") }
    #expect(aside.count == 1, "\(aside)")
    let kept = try String(contentsOfFile: workspace.state + "/" + (aside.first ?? "") + "/keep", encoding: .utf8)
    #expect(kept == "precious")
    #expect(try String(contentsOfFile: statePath, encoding: .utf8).contains(hello))
  }

  @Test func twoCorruptFilesInOneSecondAreBothKept() throws {
    let workspace = try Workspace()
    let store = StateStore(stateDirectory: workspace.state, logger: testLogger)
    for content in ["first {", "second {"] {
      try content.write(toFile: store.path, atomically: true, encoding: .utf8)
      #expect(store.load().isEmpty)
    }
    let aside = try FileManager.default.contentsOfDirectory(atPath: workspace.state).filter { $0.hasPrefix("state.json.corrupt-") }.sorted()
    #expect(aside.count == 2, "\(aside)")
    let contents = Set(aside.compactMap { try? String(contentsOfFile: workspace.state + "/" + $0, encoding: .utf8) })
    #expect(contents == ["first {", "second {"])
  }

  /// EACCES needs a user other than root: the real supervisor runs as nobody. Where nobody
  /// owns the state folder the root-only file is moved aside; where it does not, the file
  /// stays as it was and the supervisor refuses to save over it.
  @Test(arguments: [true, false])
  func aStateFileThatCannotBeReadIsNeverOverwritten(_ folderIsWritable: Bool) async throws {
    try #require(getuid() == 0, "this test runs the supervisor as the nobody user and needs root")
    let workspace = try Workspace()
    let original = #"{"version":1,"plugins":[{"id":"dev.test.gone","directory":"/nowhere","running":true}]}"#
    let statePath = workspace.state + "/state.json"
    try original.write(toFile: statePath, atomically: true, encoding: .utf8)
    chmod(statePath, 0o600)
    chmod(workspace.root, 0o755)
    if folderIsWritable { chown(workspace.state, 65534, 65534) }
    let socketDirectory = workspace.root + "/sock"
    try FileManager.default.createDirectory(atPath: socketDirectory, withIntermediateDirectories: true)
    chown(socketDirectory, 65534, 65534)
    let socket = socketDirectory + "/supervisor.sock"

    let log = workspace.root + "/supervisor.log"
    let process = try ChildProcess("/usr/bin/setpriv", [
      "--reuid=65534", "--regid=65534", "--clear-groups", Binaries.supervisor,
      "--plugins-dir", workspace.plugins, "--state-dir", workspace.state, "--socket", socket, "--cgroup-root", "/nonexistent",
    ], stderr: .file(log))
    let up = await eventually(timeout: .seconds(15)) { FileManager.default.fileExists(atPath: socket) }
    // It has loaded and saved once by the time it listens (saving happens on restore).
    try await Task.sleep(for: .milliseconds(300))
    kill(process.pid, SIGTERM)
    let exited = await eventually(timeout: .seconds(10)) { !process.isRunning }
    if !exited { kill(process.pid, SIGKILL) }
    await process.waitUntilExit()
    let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
    try #require(up, "the supervisor did not start as nobody: \(output)")

    let aside = try FileManager.default.contentsOfDirectory(atPath: workspace.state).filter { $0.hasPrefix("state.json.corrupt-") }
    if folderIsWritable {
      #expect(aside.count == 1, "\(aside) \(output)")
      #expect(try String(contentsOfFile: workspace.state + "/" + (aside.first ?? ""), encoding: .utf8) == original)
      #expect(output.contains("moved it aside"), "\(output)")
    } else {
      #expect(aside.isEmpty)
      #expect(try String(contentsOfFile: statePath, encoding: .utf8) == original)
      #expect(output.contains("Permission denied") && output.contains("could not be moved aside"), "\(output)")
    }
  }
}
