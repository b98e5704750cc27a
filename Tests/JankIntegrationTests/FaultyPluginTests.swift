import Foundation
import JankControl
import JankJSON
import JankSupervisorCore
import Testing

/// Plugins that misbehave before or during their handshake end in `error` with a reason,
/// leave no process behind, and never hang the supervisor.
@Suite struct FaultyPluginTests {
  struct Case: Sendable, CustomTestStringConvertible {
    var name: String
    var script: String
    var reason: LastExit.Reason
    var message: String
    var testDescription: String { name }
  }

  static let cases: [Case] = [
    Case(name: "garbage", script: "echo 'Welcome to my plugin!'; sleep 30", reason: .handshakeFailed, message: "Welcome to my plugin!"),
    Case(name: "early-exit", script: "echo 'cannot open config' >&2; exit 3", reason: .handshakeFailed, message: "exited with code 3"),
    Case(name: "silent", script: "exec sleep 30", reason: .startTimeout, message: "start_timeout_ms"),
    Case(name: "wrong-core", script: "echo '2|1|unix|/tmp/x.sock|grpc|'; sleep 30", reason: .handshakeFailed, message: "core protocol version is '2'"),
    Case(name: "wrong-app", script: "echo '1|7|unix|/tmp/x.sock|grpc|'; sleep 30", reason: .handshakeFailed, message: "app protocol version is '7'"),
    Case(name: "netrpc", script: "echo '1|1|unix|/tmp/x.sock|netrpc|'; sleep 30", reason: .handshakeFailed, message: "protocol 'netrpc'"),
    Case(name: "no-server", script: "echo \"1|1|unix|$PLUGIN_UNIX_SOCKET_DIR/nothing-here.sock|grpc|\"; sleep 30", reason: .startTimeout, message: "nothing listens"),
    Case(name: "outside-folder", script: "echo '1|1|unix|/tmp/jank-nothing-here.sock|grpc|'; sleep 30", reason: .handshakeFailed, message: "not in the folder assigned"),
    Case(name: "flood", script: "head -c 3000000 /dev/zero | tr '\\\\0' 'x'; echo; sleep 30", reason: .handshakeFailed, message: "invalid handshake line"),
  ]

  @Test(arguments: cases)
  func misbehavingPluginEndsInErrorWithTheReason(_ fault: Case) async throws {
    // The real binary, not a supervisor in the test process: there, the forks of every
    // in-process supervisor of the run queue on one thread, and a spawn took over a second
    // beside the suite (time the plugin is not charged for, but this bound would be).
    let workspace = try Workspace()
    let id = try workspace.addPlugin(fault.name, script: fault.script, extra: #","start_timeout_ms":800,"restart":{"policy":"never"}"#)
    let supervisor = try await SupervisorProcess(workspace)
    defer { supervisor.terminate() }
    let client = try await ControlClient.connect(path: workspace.socket)
    defer { Task { await client.close() } }
    do {
      let clock = ContinuousClock()
      let begin = clock.now
      let info = try await client.call(ControlMethods.register, RegisterParams(id: id))
      // Product bound: the spawn, start_timeout_ms (800 ms from the spawn, kept by the
      // launcher's own clock), plus at most lateReaderGrace (2 s) when the line was in the
      // pipe but not yet read at the deadline, then the kill of the process group; a
      // handshake fault ends sooner.
      #expect(clock.now - begin < .seconds(5))
      #expect(info.status == .error)
      #expect(info.lastExit?.reason == fault.reason)
      #expect(info.lastError?.contains(fault.message) == true, "\(info.lastError ?? "nil")")
      #expect(info.pid == nil)
      // Nothing of the plugin survives: its process group was killed.
      let leftovers = try await runProgram("/usr/bin/pgrep", ["-f", workspace.plugins + "/" + fault.name + "/"])
      #expect(leftovers.stdout.isEmpty, "left running: \(leftovers.stdout)")

      do {
        _ = try await client.call(ControlMethods.execute, ExecuteParams(id: id, method: "greet"))
        Issue.record("execute on an errored plugin succeeded")
      } catch let error as ControlError {
        #expect(error.kind == .unavailable)
        #expect(error.message.contains("jankctl start"))
      }
    }
  }

  @Test func aCrashedPluginIsRestartedAndItsExitIsClassified() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addHelloWorld(extra: #","restart":{"initial_delay_ms":50}"#)
      let info = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      let pid = try #require(info.pid)
      kill(pid_t(pid), SIGKILL)
      #expect(await eventually {
        let now = try? await running.client.call(ControlMethods.get, PluginIDParams(id: id))
        return now?.status == .ready && now?.pid != pid
      })
      let after = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(after.restarts == 1)
      #expect(after.lastExit?.reason == .signaled)
      #expect(after.lastExit?.signal == Int(SIGKILL))
      #expect(processIsGone(pid))
      let greet = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "greet", args: ["name": "again"]))
      #expect(greet.data["message"] == "Hello, again!")
    }
  }

  @Test func aPluginThatStopsAnsweringIsKilledAndRestartedAsHealthFailed() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addFaultPlugin(
        extra: #","health":{"interval_ms":100,"timeout_ms":200,"failures":2},"restart":{"initial_delay_ms":20}"#)
      let info = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      let pid = try #require(info.pid)
      try await Task.sleep(for: .milliseconds(400))
      #expect(try await running.client.call(ControlMethods.get, PluginIDParams(id: id)).pid == pid, "a healthy plugin was restarted")
      kill(pid_t(pid), SIGSTOP)
      #expect(await eventually(timeout: .seconds(10)) {
        let now = try? await running.client.call(ControlMethods.get, PluginIDParams(id: id))
        return now?.status == .ready && now?.pid != pid
      })
      let after = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(after.lastExit?.reason == .healthFailed)
      #expect(after.lastError?.contains("health checks") == true)
      #expect(after.restarts == 1)
      #expect(processIsGone(pid))
    }
  }

  @Test func aPluginThatKeepsFailingEndsInErrorAfterMaxRestarts() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addPlugin(
        "crashloop", script: "echo 'config missing' >&2; exit 3",
        extra: #","restart":{"initial_delay_ms":10,"max_delay_ms":40,"max_restarts":3,"window_s":60}"#)
      let first = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      #expect(first.status == .backoff)
      #expect(first.nextRestartAt != nil)
      #expect(await eventually { (try? await running.client.call(ControlMethods.get, PluginIDParams(id: id)).status) == .error })
      let info = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(info.restarts == 3)
      #expect(info.lastExit?.reason == .handshakeFailed)
      #expect(info.lastExit?.code == 3)
      #expect(info.lastError?.contains("max_restarts 3") == true, "\(info.lastError ?? "")")
      #expect(info.lastError?.contains("config missing") == true)
      // An operator's start leaves error with a fresh budget.
      let again = try await running.client.call(ControlMethods.start, PluginIDParams(id: id))
      #expect(again.status == .backoff)
      #expect(again.consecutiveFailures == 1)
      _ = try await running.client.call(ControlMethods.stop, PluginIDParams(id: id))
    }
  }

  @Test func aCleanExitUnderOnFailureStaysStopped() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addFaultPlugin(extra: #","restart":{"policy":"on-failure","initial_delay_ms":10}"#)
      _ = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      await #expect(throws: ControlError.self) {
        try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "exit", args: ["code": 0]))
      }
      #expect(await eventually { (try? await running.client.call(ControlMethods.get, PluginIDParams(id: id)).status) == .stopped })
      let info = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(info.lastExit?.reason == .exited)
      #expect(info.lastExit?.code == 0)
      #expect(info.restarts == 0)
    }
  }
}
