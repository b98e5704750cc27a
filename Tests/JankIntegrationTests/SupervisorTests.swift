import Foundation
import JankControl
import JankJSON
import JankSupervisorCore
import Testing

/// The supervisor engine with real plugin processes, driven through the control channel.
@Suite struct SupervisorTests {
  @Test func helloWorldAnswersEveryMethodThroughTheControlChannel() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addHelloWorld()
      let info = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      #expect(info.status == .ready)
      #expect(info.pid != nil)
      #expect(info.transport == "jank-frame")

      let client = running.client
      let greet = try await client.call(ControlMethods.execute, ExecuteParams(id: id, method: "greet", args: ["name": "Ada"]))
      #expect(greet.data == ["message": "Hello, Ada!"])

      let nested: [String: JSONValue] = ["a": [1, 2.5, nil, ["b": true, "c": "ü\n"]], "n": -0.125, "s": ""]
      let echo = try await client.call(ControlMethods.execute, ExecuteParams(id: id, method: "echo", args: nested))
      #expect(echo.data == nested)

      let about = try await client.call(ControlMethods.execute, ExecuteParams(id: id, method: "info"))
      #expect(about.data["id"] == "dev.jank.plugins.hello-world")
      #expect(about.data["version"] == "1.0.0")

      await #expect(throws: ControlError(.pluginError, "unknown method: fly")) {
        try await client.call(ControlMethods.execute, ExecuteParams(id: id, method: "fly"))
      }
      await #expect(throws: ControlError(.pluginError, "name is required")) {
        try await client.call(ControlMethods.execute, ExecuteParams(id: id, method: "greet"))
      }
    }
  }

  @Test func unknownAndHostileIDsAreRefusedBeforeTouchingAnything() async throws {
    try await withSupervisor { _, running in
      do {
        _ = try await running.client.call(ControlMethods.get, PluginIDParams(id: "dev.nobody.here"))
        Issue.record("unknown id accepted")
      } catch let error as ControlError {
        #expect(error.kind == .notFound)
        #expect(error.message.contains("jankctl register"))
      }
      for hostile in ["../../etc/passwd", "dev.x/../../y", "", "DEV.X"] {
        do {
          _ = try await running.client.call(ControlMethods.register, RegisterParams(id: hostile))
          Issue.record("hostile id \(hostile) accepted")
        } catch let error as ControlError {
          #expect(error.kind == .invalid, "\(hostile)")
        }
      }
    }
  }

  @Test func registeringTwiceIsAConflictAndIncompletePluginsListEveryProblem() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addHelloWorld()
      _ = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      await #expect(throws: ControlError.self) { try await running.client.call(ControlMethods.register, RegisterParams(id: id)) }

      try workspace.addPlugin("broken", script: nil, extra: #","max_concurrency":"lots","restart":{"policy":"sometimes"}"#)
      do {
        _ = try await running.client.call(ControlMethods.register, RegisterParams(id: "dev.test.broken"))
        Issue.record("incomplete plugin registered")
      } catch let error as ControlError {
        #expect(error.kind == .invalid || error.kind == .notFound)
      }
      let list = try await running.client.call(ControlMethods.list, ListParams())
      let broken = try #require(list.unregistered.first { $0.directory.hasSuffix("/broken") })
      #expect(broken.status == .incomplete)
      #expect(broken.problems.count == 2)
      #expect(list.registered.map(\.id) == [id])
    }
  }

  @Test func stopLeavesNoProcessAndNoSocketFile() async throws {
    try await withSupervisor { workspace, running in
      // A long stop_timeout_ms: only the Shutdown RPC can end the plugin well before it.
      let id = try workspace.addHelloWorld(extra: #","stop_timeout_ms":10000"#)
      let started = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      let pid = try #require(started.pid)
      let sockets = try FileManager.default.subpathsOfDirectory(atPath: workspace.state + "/run").filter { $0.hasSuffix(".sock") }
      #expect(sockets.count == 1)

      let clock = ContinuousClock()
      let begin = clock.now
      let stopped = try await running.client.call(ControlMethods.stop, PluginIDParams(id: id))
      // Product bound: the Shutdown RPC ends the plugin long before stop_timeout_ms (10 s).
      #expect(clock.now - begin < .seconds(8), "Shutdown RPC should end the plugin before SIGTERM is needed")
      #expect(stopped.status == .stopped)
      #expect(stopped.lastExit?.reason == .stopped)
      #expect(stopped.lastExit?.code == 0)
      #expect(processIsGone(pid))
      let left = (try? FileManager.default.subpathsOfDirectory(atPath: workspace.state + "/run")) ?? []
      #expect(left.filter { $0.hasSuffix(".sock") }.isEmpty)

      await #expect(throws: ControlError.self) {
        try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "greet", args: ["name": "x"]))
      }
      let restarted = try await running.client.call(ControlMethods.start, PluginIDParams(id: id))
      #expect(restarted.status == .ready)
      #expect(restarted.pid != pid)
    }
  }

  @Test func startedAtUptimeAndNextRestartAtDescribeWhatIsHappening() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addFaultPlugin(extra: #","restart":{"initial_delay_ms":4000}"#)
      let info = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      // started_at: an ISO-8601 time, now (to the second it is written with).
      let startedAt = try #require(info.startedAt.flatMap { try? Date($0, strategy: .iso8601) }, "started_at \(info.startedAt ?? "nil")")
      #expect(abs(startedAt.timeIntervalSinceNow) < 5, "started_at \(info.startedAt!) is not now")
      let uptime = try #require(info.uptimeSeconds)
      #expect(uptime >= 0 && uptime < 5)
      #expect(info.nextRestartAt == nil)
      try await Task.sleep(for: .milliseconds(1100))
      let later = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      #expect(try #require(later.uptimeSeconds) >= uptime + 1, "uptime did not grow: \(uptime) -> \(later.uptimeSeconds ?? -1)")
      #expect(later.startedAt == info.startedAt)

      // In backoff: no process, so no uptime; next_restart_at is ahead (4 s ± 20 %).
      kill(pid_t(try #require(info.pid)), SIGKILL)
      #expect(await eventually { (try? await running.client.call(ControlMethods.get, PluginIDParams(id: id)).status) == .backoff })
      let waiting = try await running.client.call(ControlMethods.get, PluginIDParams(id: id))
      let next = try #require(waiting.nextRestartAt.flatMap { try? Date($0, strategy: .iso8601) }, "next_restart_at \(waiting.nextRestartAt ?? "nil")")
      #expect(next > Date(), "next_restart_at \(waiting.nextRestartAt!) is not in the future")
      #expect(next < Date().addingTimeInterval(6))
      #expect(waiting.pid == nil && waiting.uptimeSeconds == nil && waiting.startedAt == nil)

      let back = try await running.restarted(id, replacing: info.pid)
      #expect(back.nextRestartAt == nil)
      let restartedAt = try #require(back.startedAt.flatMap { try? Date($0, strategy: .iso8601) })
      #expect(restartedAt >= startedAt.addingTimeInterval(3))
      #expect(try #require(back.uptimeSeconds) < 5)
    }
  }

  @Test func stopKillsWhatThePluginLeftInItsProcessGroup() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addFaultPlugin()
      _ = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      let spawned = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "spawn-stubborn-child"))
      let child = try #require(spawned.data["pid"]?.numberValue)
      #expect(!processIsGone(Int(child)))
      _ = try await running.client.call(ControlMethods.stop, PluginIDParams(id: id))
      #expect(await eventually(timeout: .seconds(3)) { processIsGone(Int(child)) }, "a child of the plugin survived stop")
    }
  }

  @Test func aPluginThatIgnoresShutdownAndSIGTERMIsKilledOnSchedule() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addFaultPlugin(extra: #","stop_timeout_ms":300"#)
      let info = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      _ = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "ignore-term"))
      // A call in flight keeps the plugin's graceful shutdown waiting.
      let stuck = Task { try? await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "sleep", args: ["ms": 20_000])) }
      #expect(await eventually { (try? await running.client.call(ControlMethods.get, PluginIDParams(id: id)).inFlight) == 1 })
      let clock = ContinuousClock()
      let begin = clock.now
      let stopped = try await running.client.call(ControlMethods.stop, PluginIDParams(id: id))
      let took = clock.now - begin
      // Product bound: the stop sequence, stop_timeout_ms (300 ms) for Shutdown, then SIGTERM
      // and 1 s, then SIGKILL: at least 1.3 s, and nothing waits beyond it.
      #expect(took >= .milliseconds(1_300), "SIGKILL came before Shutdown, 300 ms and SIGTERM + 1 s: \(took)")
      #expect(took < .milliseconds(2_800), "the stop sequence overran: \(took)")
      #expect(stopped.lastExit?.signal == Int(SIGKILL))
      #expect(processIsGone(try #require(info.pid)))
      _ = await stuck.value
    }
  }

  @Test func twentyPluginsAtOnceWithConcurrentExecutes() async throws {
    try await withSupervisor { workspace, running in
      let ids = try (1...20).map { try workspace.addPlugin("p\($0)", script: "exec '\(Binaries.helloWorld)' \"$@\"") }
      let infos = try await withThrowingTaskGroup(of: PluginInfo.self) { group in
        for id in ids { group.addTask { try await running.client.call(ControlMethods.register, RegisterParams(id: id)) } }
        return try await group.reduce(into: []) { $0.append($1) }
      }
      #expect(infos.allSatisfy { $0.status == .ready })
      #expect(Set(infos.compactMap(\.pid)).count == 20)

      let answers = try await withThrowingTaskGroup(of: Bool.self) { group in
        for (i, id) in ids.enumerated() {
          for call in 0..<10 {
            group.addTask {
              let result = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "greet", args: ["name": .string("n\(i)-\(call)")]))
              return result.data["message"] == .string("Hello, n\(i)-\(call)!")
            }
          }
        }
        return try await group.reduce(into: [Bool]()) { $0.append($1) }
      }
      #expect(answers.count == 200)
      #expect(answers.allSatisfy { $0 })
      let status = try await running.client.call(ControlMethods.status, NoParams())
      #expect(status.registered == 20)
    }
  }

  @Test func pluginStderrIsKeptAsHCLogJSON() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addHelloWorld()
      _ = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      #expect(await eventually { (try? await running.supervisor.logs(id: id, tail: 10).isEmpty == false) ?? false })
      let line = try #require(try await running.supervisor.logs(id: id, tail: 10).first)
      let object = try JSONDecoder().decode([String: JSONValue].self, from: Data(line.utf8))
      #expect(object["@message"] == "plugin serving")
      #expect(object["@level"] == "info")
      let timestamp = try #require(object["@timestamp"]?.stringValue)
      #expect(timestamp.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z/) != nil, "\(timestamp)")
    }
  }

  @Test func aPluginWithoutABinaryIsBuiltFirstAndAFailedBuildIsAnErrorWithTheLog() async throws {
    try await withSupervisor { workspace, running in
      // The build writes bin/run: a script that execs the real hello-world.
      let id = try workspace.addPlugin("needs-build", script: nil, extra: #","build":{"command":["sh","build.sh"]}"#)
      let script = "printf '#!/bin/sh\\nexec %s \"$@\"\\n' '\(Binaries.helloWorld)' > bin/run && chmod +x bin/run && echo built"
      try script.write(toFile: workspace.plugins + "/needs-build/build.sh", atomically: true, encoding: .utf8)
      let list = try await running.client.call(ControlMethods.list, ListParams())
      #expect(list.unregistered.first { $0.id == id }?.status == .sourceOnly)
      let info = try await running.client.call(ControlMethods.register, RegisterParams(id: id))
      #expect(info.status == .ready, "\(info.lastError ?? "")")
      let greet = try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "greet", args: ["name": "B"]))
      #expect(greet.data["message"] == "Hello, B!")

      let failing = #","build":{"command":["sh","-c","echo 'main.swift:3: error: expected expression' >&2; exit 2"]}"#
      let bad = try workspace.addPlugin("bad-build", script: nil, extra: failing)
      let failed = try await running.client.call(ControlMethods.register, RegisterParams(id: bad))
      #expect(failed.status == .error)
      #expect(failed.lastError?.contains("expected expression") == true, "\(failed.lastError ?? "")")
      #expect(failed.lastError?.contains("exited with code 2") == true)
    }
  }
}
