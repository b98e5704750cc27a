import Foundation
import JankControl
import JankJSON
import Synchronization
import Testing

/// Execute discipline: deadlines, the concurrency cap, crashes mid-call.
@Suite struct ExecuteTests {
  @Test func aCallPastItsDeadlineFailsWithTimeoutInsteadOfHanging() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addFaultPlugin(extra: #","exec_timeout_ms":5000"#)
      _ = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      let clock = ContinuousClock()
      let begin = clock.now
      do {
        _ = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "sleep", args: ["ms": 10_000], timeoutMs: 300))
        Issue.record("a 10 s call returned within a 300 ms deadline")
      } catch let error as ControlError {
        #expect(error.kind == .timeout)
        #expect(error.message.contains("timeout_ms"))
      }
      // Product bound: the call's timeout_ms (300 ms) ends it; the rest is the answer's way back.
      #expect(clock.now - begin < .seconds(3))
      // exec_timeout_ms caps a larger request timeout too.
      let capped = clock.now
      await #expect(throws: ControlError.self) {
        try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "sleep", args: ["ms": 60_000], timeoutMs: 600_000))
      }
      // Product bound: exec_timeout_ms (5 s) caps the requested 600 s.
      #expect(clock.now - capped < .seconds(8))
      // The plugin still answers afterwards.
      let ok = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "sleep", args: ["ms": 1]))
      #expect(ok.data["slept_ms"] == 1)
    }
  }

  @Test func callsBeyondMaxConcurrencyAreBusyAtOnce() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addFaultPlugin(extra: #","max_concurrency":2"#)
      _ = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      // Long enough that both are surely still in flight at the checks below, on a loaded machine too.
      let slow = (0..<2).map { _ in
        Task { try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "sleep", args: ["ms": 10_000])) }
      }
      #expect(await eventually { (try? await running.client.call(ControlMethods.get, PluginIDParams(id: id)).inFlight) == 2 })
      let info = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(info.status == .running)
      do {
        _ = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "echo"))
        Issue.record("a third call was accepted with max_concurrency 2")
      } catch let error as ControlError {
        #expect(error.kind == .busy)
      }
      // "At once": the refusal came while both slow calls are still in flight, not after.
      let during = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(during.inFlight == 2)
      for task in slow { _ = try await task.value }
      let after = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(after.status == .ready)
      #expect(after.inFlight == 0)
    }
  }

  @Test func aCrashMidCallFailsTheCallAndThePluginComesBack() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addFaultPlugin(extra: #","restart":{"initial_delay_ms":20}"#)
      _ = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      do {
        _ = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "crash"))
        Issue.record("a crashing call succeeded")
      } catch let error as ControlError {
        #expect(error.kind == .unavailable)
        #expect(error.message.contains("crashed during the call (killed by signal 9)"), "\(error.message)")
      }
      #expect(await eventually { (try? await running.client.call(ControlMethods.get, PluginIDParams(id: id)).status) == .ready })
      let info = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(info.lastExit?.reason == .signaled)
      #expect(info.restarts == 1)
      #expect(info.lastError?.contains("signal 9") == true)
    }
  }

  @Test func aFloodOfLogLinesIsKeptToTheLastThousand() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addFaultPlugin()
      _ = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      _ = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "log", args: ["lines": 5000]))
      #expect(await eventually { (try? await running.supervisor.logs(id: id, tail: 1).first?.contains("line 4999")) == true })
      let lines = try await running.supervisor.logs(id: id, tail: 5000)
      #expect(lines.count == 1000)
      let pong = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "echo", args: ["x": 1]))
      #expect(pong.data["x"] == 1)
    }
  }
}

@Suite struct ExecuteDuringRestartTests {
  @Test func aCallDuringBackoffWaitsForTheRestartWithinItsDeadline() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addFaultPlugin(extra: #","restart":{"initial_delay_ms":3000}"#)
      let info = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      kill(pid_t(try #require(info.pid)), SIGKILL)
      #expect(await eventually { (try? await running.client.call(ControlMethods.get, PluginIDParams(id: id)).status) == .backoff })

      // Too short a deadline: a timeout that says the plugin is restarting, not a hang.
      do {
        _ = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "echo", timeoutMs: 100))
        Issue.record("a call succeeded while the plugin was in backoff")
      } catch let error as ControlError {
        #expect(error.kind == .timeout)
        #expect(error.message.contains("backoff"))
      }
      // A deadline that covers the restart: the call is answered by the new process.
      let answer = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "pid", timeoutMs: 20_000))
      let newPID = try #require(answer.data["pid"]?.numberValue)
      #expect(Int(newPID) != info.pid)
    }
  }

  /// On both transports (gRPC sees a dropped connection differently from jank-frame).
  @Test(arguments: TransportContractTests.Transport.allCases)
  func anUndeliveredCallIsSentOnceMoreAfterTheRestartAndADeliveredOneNever(_ transport: TransportContractTests.Transport) async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addFaultPlugin(extra: transport.manifestField + #","restart":{"initial_delay_ms":20}"#)
      let info = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      #expect(info.transport == transport.rawValue)
      let oldPID = try #require(info.pid)
      let marker = workspace.root + "/drop-marker"

      // Delivered: the plugin ran it, then its connection broke before the answer. It fails
      // and is not run again.
      await #expect(throws: ControlError.self) {
        try await running.client.call(
          ControlMethods.execute, ExecuteParams(id: id, method: "drop-connection", args: ["marker": .string(marker), "exit_after_ms": 5000]))
      }
      // The process still lives (the supervisor still sees it ready) but refuses connections:
      // this call cannot be delivered, so it is sent to the replacement process.
      let before = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(before.pid == oldPID)
      #expect(before.status == .ready)
      let answer = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "pid", timeoutMs: 20_000))
      let newPID = try #require(answer.data["pid"]?.numberValue)
      #expect(Int(newPID) != oldPID)
      let runs = try String(contentsOfFile: marker, encoding: .utf8).split(separator: "\n")
      #expect(runs == ["drop-connection \(oldPID)"])
    }
  }

  /// `starting`, not only `backoff`: a call that arrives during a slow start waits for it.
  @Test func aCallDuringASlowStartWaitsForReadyWithinItsDeadline() async throws {
    try await withSupervisor { workspace, running in
      // The start waits for the test to let it go: with a fixed 2 s start, a loaded machine
      // could take longer than that between the pid file and the call, and the call found
      // the plugin ready (seen under a CPU hog; the product promises no such window).
      let pidFile = workspace.root + "/slow.pid"
      let gate = workspace.root + "/slow.go"
      let id = try workspace.addPlugin(
        "slow", script: "echo $$ > '\(pidFile)'; while [ ! -f '\(gate)' ]; do sleep 0.02; done; exec '\(Binaries.faultPlugin)'", extra: #","start_timeout_ms":60000"#)
      let register = Task { try await running.client.call(ControlMethods.register, RegisterParams(id: id)) }
      #expect(await eventually(timeout: .seconds(10)) { FileManager.default.fileExists(atPath: pidFile) })
      #expect(try await running.client.call(ControlMethods.get, PluginIDParams(id: id)).status == .starting)
      do {
        _ = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "echo", timeoutMs: 100))
        Issue.record("a call succeeded while the plugin was starting")
      } catch let error as ControlError {
        #expect(error.kind == .timeout)
        #expect(error.message.contains("starting"), "\(error.message)")
      }
      let waiting = Task { try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "pid", timeoutMs: 20_000)) }
      try await Task.sleep(for: .milliseconds(200))
      try writeText("go\n", to: gate)
      let answer = try await waiting.value
      let started = try await register.value
      // The waiting call may already be running on it when register reads the status.
      #expect(started.status == .ready || started.status == .running)
      #expect(answer.data["pid"]?.numberValue.map { Int($0) } == started.pid)
    }
  }

  /// The plugin becomes ready and crashes again before the waiting call is sent (the test
  /// hook kills the new process in that gap, and waits until the supervisor saw the
  /// crash): the call waits for the next restart instead of failing.
  @Test func aCallWaitsAgainWhenThePluginCrashesBetweenReadyAndTheSend() async throws {
    try await withSupervisor { workspace, running in
      // A backoff of 2.4-3.6 s: long enough for a loaded machine's polling to see it (1.2-1.8 s
      // was missed once in about 20 parallel runs).
      let id = try workspace.addFaultPlugin(extra: #","restart":{"initial_delay_ms":3000,"max_delay_ms":3000}"#)
      let info = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      let first = try #require(info.pid)
      let killed = FirstPID()
      let supervisor = running.supervisor
      try await supervisor.afterReadinessWaitForTesting(id: id) { pid in
        guard let pid, killed.claim(pid) else { return }
        kill(pid, SIGKILL)
        _ = await eventually { (try? await supervisor.get(id: id))?.status == .backoff }
      }
      kill(pid_t(first), SIGKILL)
      #expect(await eventually { (try? await running.client.call(ControlMethods.get, PluginIDParams(id: id)).status) == .backoff })
      let answer = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "pid", timeoutMs: 20_000))
      let second = try #require(killed.pid, "the hook never ran: the call did not wait for readiness")
      let third = try #require(answer.data["pid"]?.numberValue.map { Int($0) })
      #expect(third != first && third != Int(second))
      #expect(try await running.client.call(ControlMethods.get, PluginIDParams(id: id)).restarts == 2)
    }
  }
}

/// The first pid offered, kept; later ones refused.
final class FirstPID: Sendable {
  private let value = Mutex<pid_t?>(nil)
  var pid: pid_t? { value.withLock { $0 } }

  func claim(_ pid: pid_t) -> Bool {
    value.withLock { first in
      guard first == nil else { return false }
      first = pid
      return true
    }
  }
}
