import Foundation
import JankControl
import Testing

/// What every hostile-input case checks once the input is dealt with: the supervisor still
/// answers a normal `get` and `execute` of another plugin within a second, and its memory
/// grew by less than `boundKB`.
func expectStillServing(
  _ client: ControlClient, _ id: String, supervisor pid: pid_t, rssBeforeKB: Int, boundKB: Int = 64 * 1024,
  sourceLocation: SourceLocation = #_sourceLocation
) async throws {
  let begin = ContinuousClock.now
  let info = try await client.call(ControlMethods.get, PluginIDParams(id: id), timeout: .seconds(5))
  let result = try await client.call(ControlMethods.execute, ExecuteParams(id: id, method: "greet", args: ["name": "Ada"]), timeout: .seconds(5))
  // Product bound: a get and an execute are milliseconds; nothing hostile is left holding them.
  #expect(ContinuousClock.now - begin < .seconds(1), "get + execute took \(ContinuousClock.now - begin)", sourceLocation: sourceLocation)
  #expect(info.status == .ready, sourceLocation: sourceLocation)
  #expect(result.data["message"] == "Hello, Ada!", sourceLocation: sourceLocation)
  let after = try #require(residentKB(pid), sourceLocation: sourceLocation)
  #expect(after - rssBeforeKB < boundKB, "supervisor RSS \(rssBeforeKB) kB → \(after) kB", sourceLocation: sourceLocation)
}

/// What each hostile case attacks: a `jank-supervisor` process of its own (so that its RSS
/// is the supervisor's alone), a control client, and a bystander plugin registered and
/// serving, whose service `expectBystanderServing` checks once the attack is dealt with.
/// Add the hostile plugins to the workspace first.
struct HostileStack {
  let supervisor: SupervisorProcess
  let client: ControlClient
  let bystander: String
  /// The supervisor's RSS once the bystander serves, before the attack.
  let rssBeforeKB: Int

  init(_ workspace: Workspace, bystander: String, environment: [String: String] = [:]) async throws {
    let supervisor = try await SupervisorProcess(workspace, environment: environment)
    do {
      let client = try await ControlClient.connect(path: workspace.socket)
      _ = try await client.call(ControlMethods.register, RegisterParams(id: bystander), timeout: .seconds(30))
      self.rssBeforeKB = try #require(residentKB(supervisor.pid))
      self.client = client
    } catch {
      supervisor.terminate()
      throw error
    }
    self.supervisor = supervisor
    self.bystander = bystander
  }

  func expectBystanderServing(boundKB: Int = 64 * 1024, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    try await expectStillServing(client, bystander, supervisor: supervisor.pid, rssBeforeKB: rssBeforeKB, boundKB: boundKB, sourceLocation: sourceLocation)
  }

  /// For `defer`: SIGTERM to the supervisor, and the client closed in the background.
  func stop() {
    supervisor.terminate()
    let client = client
    Task { await client.close() }
  }
}
