import Foundation
import JankJSON
import Testing

struct JankctlOutputError: Error, CustomStringConvertible {
  var arguments: [String]
  var status: Int32
  var stdout: String
  var stderr: String
  var description: String { "jankctl \(arguments) exited \(status) with stdout that is not JSON: '\(stdout)', stderr: '\(stderr)'" }
}

/// The real binaries: `jank-supervisor` with its flags, `jankctl` with `--json` and exit codes.
@Suite(.serialized) struct CommandLineTests {
  func jankctl(_ workspace: Workspace, _ arguments: [String]) async throws -> ProgramResult {
    try await runProgram(Binaries.jankctl, arguments + ["--socket", workspace.socket])
  }

  func jankctlJSON(_ workspace: Workspace, _ arguments: [String]) async throws -> (Int32, JSONValue) {
    let result = try await runProgram(Binaries.jankctl, arguments + ["--socket", workspace.socket, "--json"])
    do {
      return (result.status, try JSONDecoder().decode(JSONValue.self, from: Data(result.stdout.utf8)))
    } catch {
      // Say what jankctl printed instead, so that a failure names its cause.
      throw JankctlOutputError(arguments: arguments, status: result.status, stdout: result.stdout, stderr: result.stderr)
    }
  }

  /// SIGTERM to the supervisor; how long it took to exit (with status 0, at most 30 s).
  func sigtermAndWait(_ supervisor: SupervisorProcess) async throws -> Duration {
    let begin = ContinuousClock.now
    kill(supervisor.pid, SIGTERM)
    let exited = await supervisor.exited(within: .seconds(30))
    let took = ContinuousClock.now - begin
    if !exited { await supervisor.killHard() }
    try #require(exited, "the supervisor did not exit within 30 s of SIGTERM")
    #expect(supervisor.process.terminationStatus == 0)
    return took
  }

  @Test func autoStartPluginsRunAndJankctlDrivesThem() async throws {
    let workspace = try Workspace()
    let id = try workspace.addHelloWorld("hello", extra: #","auto_start":true"#)
    try workspace.addPlugin("broken", script: "exit 0", extra: #","max_concurrency":"lots""#)
    let supervisor = try await SupervisorProcess(workspace)
    defer { supervisor.terminate() }

    #expect(await eventually(timeout: .seconds(10)) {
      (try? await jankctlJSON(workspace, ["get", id]).1["status"]) == "ready"
    })

    let (greetStatus, greet) = try await jankctlJSON(workspace, ["exec", id, "greet", "--args", #"{"name":"Ada"}"#])
    #expect(greetStatus == 0)
    #expect(greet["data"]?["message"] == "Hello, Ada!")
    #expect(greet["method"] == "greet")

    let (echoStatus, echo) = try await jankctlJSON(workspace, ["exec", id, "echo", "--args", #"{"deep":{"list":[1,null,"x",{"t":false}]}}"#])
    #expect(echoStatus == 0)
    #expect(echo["data"] == ["deep": ["list": [1, nil, "x", ["t": false]]]])

    let (infoStatus, info) = try await jankctlJSON(workspace, ["exec", id, "info"])
    #expect(infoStatus == 0)
    #expect(info["data"]?["name"] == "Hello World Plugin")

    let (unknownStatus, unknown) = try await jankctlJSON(workspace, ["exec", id, "fly"])
    #expect(unknownStatus == 1)
    #expect(unknown["error"]?["kind"] == "plugin_error")
    #expect(unknown["error"]?["message"] == "unknown method: fly")

    let (listStatus, list) = try await jankctlJSON(workspace, ["list"])
    #expect(listStatus == 0)
    #expect(list["registered"]?.arrayValue?.count == 1)
    let broken = list["unregistered"]?.arrayValue?.first
    #expect(broken?["status"] == "incomplete")
    #expect(broken?["problems"]?.arrayValue?.first?.stringValue?.contains("max_concurrency") == true)

    let human = try await jankctl(workspace, ["list"])
    #expect(human.status == 0)
    #expect(human.stdout.contains("ID") && human.stdout.contains(id) && human.stdout.contains("ready"))

    let (stopStatus, stopped) = try await jankctlJSON(workspace, ["stop", id])
    #expect(stopStatus == 0)
    #expect(stopped["status"] == "stopped")

    let (statusCode, status) = try await jankctlJSON(workspace, ["status"])
    #expect(statusCode == 0)
    #expect(status["registered"] == 1)
  }

  @Test func exitCodesTellScriptsWhatHappened() async throws {
    let workspace = try Workspace()
    // 3: no supervisor listening.
    let unreachable = try await jankctl(workspace, ["status"])
    #expect(unreachable.status == 3)
    #expect(unreachable.stderr.contains("cannot reach the supervisor"))
    // 2: bad usage, caught before connecting.
    #expect(try await jankctl(workspace, ["exec", "dev.x.y"]).status == 2)
    #expect(try await jankctl(workspace, ["exec", "dev.x.y", "m", "--args", "[1]"]).status == 2)
    #expect(try await jankctl(workspace, ["frobnicate"]).status == 2)

    let supervisor = try await SupervisorProcess(workspace)
    defer { supervisor.terminate() }
    // 1: a request error, with the sentence on stderr.
    let missing = try await jankctl(workspace, ["get", "dev.no.such"])
    #expect(missing.status == 1)
    #expect(missing.stderr.contains("not registered"))
    #expect(try await jankctl(workspace, ["status"]).status == 0)
  }

  @Test func restartLogsAndBuildFromTheCommandLine() async throws {
    let workspace = try Workspace()
    let id = try workspace.addHelloWorld("hello", extra: #","auto_start":true"#)
    let supervisor = try await SupervisorProcess(workspace)
    defer { supervisor.terminate() }
    #expect(await eventually(timeout: .seconds(10)) { (try? await jankctlJSON(workspace, ["get", id]).1["status"]) == "ready" })
    let before = try await jankctlJSON(workspace, ["get", id]).1["pid"]

    let (restartStatus, restarted) = try await jankctlJSON(workspace, ["restart", id])
    #expect(restartStatus == 0)
    #expect(restarted["status"] == "ready")
    #expect(restarted["pid"] != before)
    #expect(restarted["restarts"] == 1)

    let logs = try await jankctl(workspace, ["logs", id, "--tail", "3"])
    #expect(logs.status == 0)
    #expect(logs.stdout.contains("plugin serving"), "\(logs.stdout)")
    #expect(try await jankctl(workspace, ["logs", id, "--tail", "0"]).status == 2)

    // This copy has no build recipe: the build fails with the reason, the plugin keeps serving.
    let build = try await jankctl(workspace, ["build", id])
    #expect(build.status == 1)
    #expect(build.stderr.contains("no way to build"), "\(build.stderr)")
    #expect(try await jankctlJSON(workspace, ["get", id]).1["status"] == "ready")
  }

  @Test func jankctlBuildShowsTheBuildAsItRunsAndABuildPastItsTimeoutIsStopped() async throws {
    let workspace = try Workspace()
    let build = #"echo step one; sleep 0.7; echo step two >&2; cp src/run.sh bin/run && chmod +x bin/run"#
    let id = try workspace.addPlugin(
      "built", script: nil, extra: #","auto_start":true,"build":{"command":["sh","-c","\#(build)"],"sources":["src/**"]}"#)
    try FileManager.default.createDirectory(atPath: workspace.plugins + "/built/src", withIntermediateDirectories: true)
    try "#!/bin/sh\nexec '\(Binaries.helloWorld)' \"$@\"\n".write(toFile: workspace.plugins + "/built/src/run.sh", atomically: true, encoding: .utf8)
    let slow = try workspace.addPlugin("slow-build", script: nil, extra: #","build_timeout_s":1,"build":{"command":["sh","-c","echo compiling forever; sleep 30"]}"#)
    let supervisor = try await SupervisorProcess(workspace)
    defer { supervisor.terminate() }
    #expect(await eventually(timeout: .seconds(15)) { (try? await jankctlJSON(workspace, ["get", id]).1["status"]) == "ready" })

    let rebuilt = try await jankctl(workspace, ["build", id])
    #expect(rebuilt.status == 0, "\(rebuilt.stderr)")
    #expect(rebuilt.stderr.contains("  | step one") && rebuilt.stderr.contains("  | step two"), "\(rebuilt.stderr)")
    #expect(rebuilt.stdout.contains("status:      ready"))
    let log = try await jankctl(workspace, ["logs", id, "--build"])
    #expect(log.stdout == "step one\nstep two\n", "\(log.stdout)")

    let clock = ContinuousClock()
    let begin = clock.now
    let (_, timedOut) = try await jankctlJSON(workspace, ["register", slow])
    // Product bound: build_timeout_s (1 s) ends the build, which is then killed.
    #expect(clock.now - begin < .seconds(10))
    #expect(timedOut["status"] == "error")
    #expect(timedOut["last_error"]?.stringValue?.contains("took longer than 1000 ms") == true, "\(timedOut)")
    #expect(timedOut["last_error"]?.stringValue?.contains("compiling forever") == true)
  }

  /// A setting that does not parse stops jank-supervisor at once with a sentence naming it.
  @Test(arguments: [
    ("JANK_LOG_LEVEL", "loud", "log level 'loud'"),
    ("JANK_MAX_PARALLEL_BUILDS", "many", "JANK_MAX_PARALLEL_BUILDS='many' is not a whole number"),
    ("JANK_MAX_PARALLEL_BUILDS", "0", "at least one build must be allowed"),
  ])
  func aMalformedSettingStopsTheSupervisorWithAClearError(_ name: String, _ value: String, _ message: String) async throws {
    let workspace = try Workspace()
    var environment = ProcessInfo.processInfo.environment
    environment[name] = value
    let result = try await runProgram(Binaries.supervisor, ["--plugins-dir", workspace.plugins, "--state-dir", workspace.state], environment: environment)
    #expect(result.status != 0)
    #expect(result.stderr.contains(message), "\(result.stderr)")
    #expect(!FileManager.default.fileExists(atPath: workspace.socket))
  }

  @Test func pluginsDieWithinASecondOfTheSupervisorBeingKilled() async throws {
    let workspace = try Workspace()
    let ids = try (1...3).map { try workspace.addHelloWorld("h\($0)", extra: #","auto_start":true"#) }
    let supervisor = try await SupervisorProcess(workspace)
    var pids: [Int] = []
    for id in ids {
      #expect(await eventually(timeout: .seconds(10)) {
        (try? await jankctlJSON(workspace, ["get", id]).1["status"]) == "ready"
      })
      pids.append(Int(try #require(try await jankctlJSON(workspace, ["get", id]).1["pid"]?.numberValue)))
    }
    await supervisor.killHard()
    let clock = ContinuousClock()
    let begin = clock.now
    // Product bound: PR_SET_PDEATHSIG kills every plugin when the supervisor dies; 1 s is the
    // promise README makes.
    #expect(await eventually(timeout: .seconds(1)) { pids.allSatisfy { processIsGone($0) } })
    #expect(clock.now - begin < .seconds(1))
  }

  @Test func sigtermWithACallInFlightExitsZeroOnScheduleAndFailsTheCallCleanly() async throws {
    let workspace = try Workspace()
    let id = try workspace.addFaultPlugin("slow", extra: #","auto_start":true,"stop_timeout_ms":500"#)
    let supervisor = try await SupervisorProcess(workspace)
    #expect(await eventually(timeout: .seconds(10)) {
      (try? await jankctlJSON(workspace, ["get", id]).1["status"]) == "ready"
    })
    let call = Task { try await jankctl(workspace, ["exec", id, "sleep", "--args", #"{"ms":30000}"#]) }
    #expect(await eventually { (try? await jankctlJSON(workspace, ["get", id]).1["in_flight"]) == 1 })
    let clock = ContinuousClock()
    let begin = clock.now
    await supervisor.terminateAndWait()
    #expect(supervisor.process.terminationStatus == 0)
    // Product bound: shutdown ends within stop_timeout_ms (500 ms here) + 2 s.
    #expect(clock.now - begin < .milliseconds(2_500), "shutdown took longer than stop_timeout_ms + 2 s")
    let result = try await call.value
    #expect(result.status == 1 || result.status == 3)
    #expect(!result.stderr.isEmpty)
  }

  @Test(arguments: [SIGTERM, SIGINT])
  func sigtermOrSigintStopsEveryPluginAndRemovesTheSocket(_ signal: Int32) async throws {
    let workspace = try Workspace()
    let id = try workspace.addHelloWorld("hello", extra: #","auto_start":true"#)
    let supervisor = try await SupervisorProcess(workspace)
    #expect(await eventually(timeout: .seconds(10)) {
      (try? await jankctlJSON(workspace, ["get", id]).1["status"]) == "ready"
    })
    let pid = try #require(try await jankctlJSON(workspace, ["get", id]).1["pid"]?.numberValue)
    kill(supervisor.pid, signal)
    try #require(await supervisor.exited(within: .seconds(10)), "the supervisor did not exit after signal \(signal)")
    #expect(supervisor.process.ended == ChildExit(waitStatus: 0), "\(String(describing: supervisor.process.ended))")
    #expect(processIsGone(Int(pid)))
    #expect(!FileManager.default.fileExists(atPath: workspace.socket))
  }

  /// Frozen plugins (SIGSTOP: no Shutdown answer, SIGTERM pending) get one stop sequence
  /// each, all at once: stop_timeout_ms for Shutdown and exit together, SIGTERM, 1 s,
  /// SIGKILL. So the supervisor is gone within stop_timeout_ms + 2 s however many there are
  /// (one after the other, three would take 3 × 4 s).
  @Test(arguments: [1, 3])
  func sigtermWithFrozenPluginsExitsWithinOneStopSequence(_ count: Int) async throws {
    let workspace = try Workspace()
    let stopTimeout = Duration.milliseconds(3000)
    let ids = try (1...count).map { try workspace.addFaultPlugin("frozen\($0)", extra: #","auto_start":true,"stop_timeout_ms":3000"#) }
    let supervisor = try await SupervisorProcess(workspace)
    var pids: [Int] = []
    for id in ids {
      #expect(await eventually(timeout: .seconds(15)) { (try? await jankctlJSON(workspace, ["get", id]).1["status"]) == "ready" })
      pids.append(Int(try #require(try await jankctlJSON(workspace, ["get", id]).1["pid"]?.numberValue)))
    }
    for pid in pids { kill(pid_t(pid), SIGSTOP) }
    let took = try await sigtermAndWait(supervisor)
    // Product bound: one stop sequence (stop_timeout_ms, then SIGKILL) for all plugins at once.
    #expect(took < stopTimeout + .seconds(2), "shutdown took \(took), more than stop_timeout_ms + 2 s")
    #expect(took >= stopTimeout, "the plugins did not get their stop_timeout_ms: \(took)")
    #expect(pids.allSatisfy { processIsGone($0) }, "a frozen plugin survived the shutdown")
    #expect(!FileManager.default.fileExists(atPath: workspace.socket))
  }

  /// A slow start (handshake line 60 s away) and a long build: SIGTERM cancels both instead
  /// of waiting for them.
  @Test func sigtermDuringASlowStartAndABuildExitsPromptlyAndLeavesNothing() async throws {
    let workspace = try Workspace()
    let pidFile = workspace.root + "/slow.pid"
    let slow = try workspace.addPlugin(
      "slow", script: "FAULT_SLOW_START_MS=60000 FAULT_PID_FILE='\(pidFile)' exec '\(Binaries.faultPlugin)'",
      extra: #","auto_start":true,"start_timeout_ms":90000"#)
    let building = try workspace.addPlugin("building", script: nil, extra: #","auto_start":true,"build":{"command":["sleep","120"]}"#)
    let supervisor = try await SupervisorProcess(workspace)
    #expect(await eventually(timeout: .seconds(15)) { FileManager.default.fileExists(atPath: pidFile) })
    #expect(try await jankctlJSON(workspace, ["get", slow]).1["status"] == "starting")
    #expect(try await jankctlJSON(workspace, ["get", building]).1["status"] == "starting")
    let pluginPID = try #require(Int((try String(contentsOfFile: pidFile, encoding: .utf8)).split(separator: "\n").first ?? ""))
    // The build runs in its copy of the plugin's folder, under the state folder (the plugin
    // has a uid of its own, as CI runs as root), or in the folder itself.
    func everything() -> Set<Int32> { processes(workingIn: workspace.plugins).union(processes(workingIn: workspace.state)) }
    #expect(await eventually { everything().subtracting([Int32(pluginPID)]).count == 1 }, "the build did not start")
    let took = try await sigtermAndWait(supervisor)
    // Product bound: a start or build in progress is cancelled and killed, not waited for.
    #expect(took < .seconds(5), "shutdown waited for the slow start or the build: \(took)")
    #expect(await eventually(timeout: .seconds(2)) { processIsGone(pluginPID) }, "the half-started plugin survived")
    #expect(await eventually(timeout: .seconds(2)) { everything().isEmpty }, "left running: \(everything())")
    #expect(!FileManager.default.fileExists(atPath: workspace.socket))
  }

  @Test func jankctlStopDuringASlowStartReturnsPromptly() async throws {
    let workspace = try Workspace()
    let pidFile = workspace.root + "/slow.pid"
    let id = try workspace.addPlugin(
      "slow", script: "FAULT_SLOW_START_MS=60000 FAULT_PID_FILE='\(pidFile)' exec '\(Binaries.faultPlugin)'", extra: #","start_timeout_ms":90000"#)
    let supervisor = try await SupervisorProcess(workspace)
    defer { supervisor.terminate() }
    // The register call waits for the start; it gets its answer when the stop cancels it.
    let register = Task { try await jankctlJSON(workspace, ["register", id]) }
    #expect(await eventually(timeout: .seconds(15)) { FileManager.default.fileExists(atPath: pidFile) })
    #expect(try await jankctlJSON(workspace, ["get", id]).1["status"] == "starting")
    let pluginPID = try #require(Int((try String(contentsOfFile: pidFile, encoding: .utf8)).split(separator: "\n").first ?? ""))
    let clock = ContinuousClock()
    let begin = clock.now
    let (status, stopped) = try await jankctlJSON(workspace, ["stop", id])
    let took = clock.now - begin
    #expect(status == 0)
    #expect(stopped["status"] == "stopped")
    #expect(stopped["desired"] == "stopped")
    // Product bound: a stop cancels a start in progress and kills it, not waited for.
    #expect(took < .seconds(5), "stop waited for the slow start: \(took)")
    #expect(await eventually(timeout: .seconds(2)) { processIsGone(pluginPID) }, "the half-started plugin survived the stop")
    let (_, registered) = try await register.value
    #expect(registered["status"] == "stopped", "\(registered)")
    // Not in backoff, not restarted: a cancelled start is no crash.
    try await Task.sleep(for: .milliseconds(500))
    let after = try await jankctlJSON(workspace, ["get", id]).1
    #expect(after["status"] == "stopped")
    #expect(after["restarts"] == 0)
  }
}

/// SO_PEERCRED: a user who is neither root, the supervisor's user nor in the socket's group
/// is refused even when the socket file itself is world-writable.
@Suite struct ControlSocketPermissionTests {
  @Test func anotherUserIsRefusedWithAnExplanation() async throws {
    try #require(getuid() == 0, "this test switches to the nobody user and needs root")
    try await withSupervisor { workspace, _ in
      chmod(workspace.root, 0o755)
      chmod(workspace.state, 0o755)
      chmod(workspace.socket, 0o666)
      let result = try await runProgram(
        "/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", Binaries.jankctl, "status", "--socket", workspace.socket])
      #expect(result.status == 1, "\(result.stderr)")
      #expect(result.stderr.contains("permission denied: uid 65534"), "\(result.stderr)")
    }
  }
}

extension SupervisorProcess {
  /// Waits for the process to end without blocking a thread (a signal was sent to it).
  func exited(within timeout: Duration) async -> Bool {
    await eventually(timeout: timeout) { !self.process.isRunning }
  }
}
