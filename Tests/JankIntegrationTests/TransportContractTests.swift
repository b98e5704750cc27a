import Foundation
import JankControl
import JankJSON
import Testing

/// One contract, two transports: the supervisor behaves the same whether a Swift SDK plugin
/// negotiated jank-frame (the default) or was forced onto gRPC (`"transport": "grpc"`).
/// Every test runs once per transport against the same fault-plugin binary.
@Suite struct TransportContractTests {
  enum Transport: String, CaseIterable, CustomTestStringConvertible {
    case jankFrame = "jank-frame"
    case grpc

    var manifestField: String {
      switch self {
      case .jankFrame: #","transport":"auto""#
      case .grpc: #","transport":"grpc""#
      }
    }

    var testDescription: String { rawValue }
  }

  private func register(_ transport: Transport, _ workspace: Workspace, _ running: RunningSupervisor, extra: String = "") async throws -> (String, PluginInfo) {
    let id = try workspace.addFaultPlugin(extra: transport.manifestField + extra)
    let info = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
    #expect(info.status == .ready)
    #expect(info.transport == transport.rawValue)
    return (id, info)
  }

  private func execute(_ running: RunningSupervisor, _ id: String, _ method: String, _ args: [String: JSONValue] = [:], timeoutMs: Int? = nil) async throws -> [String: JSONValue] {
    try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: method, args: args, timeoutMs: timeoutMs)).data
  }

  @Test(arguments: Transport.allCases)
  func answersErrorsAndStatuses(_ transport: Transport) async throws {
    try await withSupervisor { workspace, running in
      let (id, info) = try await register(transport, workspace, running)
      let nested: JSONValue = ["a": [1, 2.5, "x", nil, true], "b": ["c": ["d": "e"]], "empty": [:], "unicode": "héllo ✓"]
      #expect(try await execute(running, id, "echo", ["v": nested]) == ["v": nested])
      do {
        _ = try await execute(running, id, "no-such-method")
        Issue.record("an unknown method succeeded")
      } catch let error as ControlError {
        #expect(error.kind == .pluginError)
        #expect(error.message.contains("unknown method: no-such-method"))
      }
      // running while a call is in flight, ready afterwards.
      let slow = Task { try await execute(running, id, "sleep", ["ms": 1500]) }
      #expect(await eventually { (try? await running.client.call(ControlMethods.get, PluginIDParams(id: id)))?.status == .running })
      #expect(try await slow.value == ["slept_ms": 1500])
      #expect(try await running.client.call(ControlMethods.get, PluginIDParams(id: id)).status == .ready)
      let stopped = try await running.client.call(ControlMethods.stop, PluginIDParams(id: id))
      #expect(stopped.status == .stopped)
      #expect(stopped.lastExit?.reason == .stopped)
      #expect(processIsGone(try #require(info.pid)))
    }
  }

  @Test(arguments: Transport.allCases)
  func aDeadlineFailsTheCallAndCancelsThePluginsTask(_ transport: Transport) async throws {
    try await withSupervisor { workspace, running in
      let (id, _) = try await register(transport, workspace, running)
      let marker = workspace.root + "/cancelled-\(transport.rawValue)"
      let started = workspace.root + "/started-\(transport.rawValue)"
      let begin = ContinuousClock.now
      do {
        // The deadline must be long enough for the call to reach the plugin: a call that
        // times out before it was delivered has no task to cancel (with 300 ms, under a
        // busy loop per core, the grpc case sometimes never started).
        _ = try await execute(running, id, "sleep", ["ms": 20_000, "marker": .string(marker), "started_marker": .string(started)], timeoutMs: 1500)
        Issue.record("a 20 s call returned within a 1.5 s deadline")
      } catch let error as ControlError {
        #expect(error.kind == .timeout)
      }
      // The product bound: the call's timeout_ms (1.5 s), and the answer's way back.
      #expect(ContinuousClock.now - begin < .seconds(5))
      #expect((try? String(contentsOfFile: started, encoding: .utf8))?.contains("started") == true, "the call never reached the plugin within its 1.5 s deadline")
      #expect(await eventually { (try? String(contentsOfFile: marker, encoding: .utf8))?.contains("cancelled") == true }, "the plugin's task was not cancelled")
      #expect(try await execute(running, id, "sleep", ["ms": 1]) == ["slept_ms": 1])
    }
  }

  @Test(arguments: Transport.allCases)
  func callsBeyondTheConcurrencyCapAreBusy(_ transport: Transport) async throws {
    try await withSupervisor { workspace, running in
      let (id, _) = try await register(transport, workspace, running, extra: #","max_concurrency":2"#)
      // Long enough to be surely in flight at the busy check, on a loaded machine too.
      let slow = (0..<2).map { _ in Task { try await execute(running, id, "sleep", ["ms": 8000]) } }
      #expect(await eventually { (try? await running.client.call(ControlMethods.get, PluginIDParams(id: id)))?.inFlight == 2 })
      await #expect { try await execute(running, id, "echo") } throws: { ($0 as? ControlError)?.kind == .busy }
      for call in slow { _ = try await call.value }
      // Many calls in flight at once on one connection, answered out of order.
      let results = try await withThrowingTaskGroup(of: (Int, [String: JSONValue]).self) { group in
        for n in 0..<2 {
          group.addTask { (n, try await execute(running, id, "sleep", ["ms": .number(Double(300 - n * 250))])) }
        }
        return try await group.reduce(into: [Int: [String: JSONValue]]()) { $0[$1.0] = $1.1 }
      }
      #expect(results == [0: ["slept_ms": 300], 1: ["slept_ms": 50]])
    }
  }

  @Test(arguments: Transport.allCases)
  func aCrashFailsExactlyTheCallsInFlightAndThePluginIsRestarted(_ transport: Transport) async throws {
    try await withSupervisor { workspace, running in
      let (id, info) = try await register(transport, workspace, running, extra: #","restart":{"initial_delay_ms":20}"#)
      let pid = try #require(info.pid)
      // Kill only once the plugin runs all three: a call still on its way would rightly be
      // resent to the replacement instead of failing.
      let started = workspace.root + "/started-\(transport.rawValue)"
      let inFlight = (0..<3).map { _ in
        Task { try await execute(running, id, "sleep", ["ms": 10_000, "started_marker": .string(started)]) }
      }
      #expect(await eventually {
        ((try? String(contentsOfFile: started, encoding: .utf8)) ?? "").split(separator: "\n").count == 3
      })
      kill(pid_t(pid), SIGKILL)
      for call in inFlight {
        do {
          _ = try await call.value
          Issue.record("a call in flight survived its plugin's SIGKILL")
        } catch let error as ControlError {
          #expect(error.kind == .unavailable)
          #expect(error.message.contains("crashed during the call (killed by signal 9)"), "\(error.message)")
        }
      }
      let after = try await running.restarted(id, replacing: pid)
      #expect(after.transport == transport.rawValue)
      #expect(after.lastExit?.reason == .signaled)
      #expect(after.lastExit?.signal == 9)
      #expect(after.restarts == 1)
      #expect(try await execute(running, id, "echo", ["x": 1]) == ["x": 1])
    }
  }

  @Test(arguments: Transport.allCases)
  func aPluginThatStopsAnsweringHealthChecksIsRestarted(_ transport: Transport) async throws {
    try await withSupervisor { workspace, running in
      let (id, info) = try await register(
        transport, workspace, running, extra: #","health":{"interval_ms":100,"timeout_ms":200,"failures":2},"restart":{"initial_delay_ms":20}"#)
      let pid = try #require(info.pid)
      kill(pid_t(pid), SIGSTOP)
      let after = try await running.restarted(id, replacing: pid)
      #expect(after.lastExit?.reason == .healthFailed)
      #expect(after.transport == transport.rawValue)
      #expect(processIsGone(pid))
    }
  }

  @Test(arguments: Transport.allCases)
  func thePluginsLogIsKept(_ transport: Transport) async throws {
    try await withSupervisor { workspace, running in
      let (id, _) = try await register(transport, workspace, running)
      _ = try await execute(running, id, "log", ["lines": 3])
      #expect(await eventually {
        let logs = try? await running.client.call(ControlMethods.logs, LogsParams(id: id))
        return logs?.lines.contains { $0.contains("line 2") } == true
      })
    }
  }
}
