import Foundation
import JankControl
import JankJSON
import Testing

/// go-plugin interop both ways, with Debian's Go and go-plugin 1.0.1 (scripts/install-deps.sh):
/// a Go plugin runs under the supervisor unchanged, and a Go host loads the Swift plugin.
@Suite struct GoInteropTests {
  static let repository = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

  /// A copy of plugins/hello-world-go (sources only) in the workspace.
  static func copyGoPlugin(into workspace: Workspace) throws -> String {
    let source = repository + "/plugins/hello-world-go"
    let target = workspace.plugins + "/hello-world-go"
    try FileManager.default.createDirectory(atPath: target + "/pluginpb", withIntermediateDirectories: true)
    for file in ["plugin.json", "main.go", "build.sh", "pluginpb/plugin.pb.go", "pluginpb/values.go"] {
      try FileManager.default.copyItem(atPath: source + "/" + file, toPath: target + "/" + file)
    }
    return "dev.jank.plugins.hello-world-go"
  }

  @Test func aGoPluginIsBuiltRunCalledCrashedAndStoppedByTheSupervisor() async throws {
    let workspace = try Workspace()
    let id = try Self.copyGoPlugin(into: workspace)
    let supervisor = try await SupervisorProcess(workspace, keepLog: true)
    defer { supervisor.terminate() }
    let client = try await ControlClient.connect(path: workspace.socket)
    defer { Task { await client.close() } }

    // Discovered as source only; registering builds it with its build.sh (offline, GOPATH).
    let listed = try await client.call(ControlMethods.list, ListParams())
    #expect(listed.unregistered.first { $0.id == id }?.status == .sourceOnly)
    let info = try await client.call(ControlMethods.register, RegisterParams(id: id))
    #expect(info.status == .ready, "\(info.lastError ?? "")")
    #expect(info.transport == "grpc")

    let greet = try await client.call(ControlMethods.execute, ExecuteParams(id: id, method: "greet", args: ["name": "Ada"]))
    #expect(greet.data["message"] == "Hello, Ada!")
    let nested: [String: JSONValue] = ["deep": ["list": [1, nil, "x", ["t": false]], "n": 2.5]]
    let echo = try await client.call(ControlMethods.execute, ExecuteParams(id: id, method: "echo", args: nested))
    #expect(echo.data == nested)
    let infoCall = try await client.call(ControlMethods.execute, ExecuteParams(id: id, method: "info"))
    #expect(infoCall.data["id"] == .string(id))
    do {
      _ = try await client.call(ControlMethods.execute, ExecuteParams(id: id, method: "fly"))
      Issue.record("an unknown method succeeded")
    } catch let error as ControlError {
      #expect(error.kind == .pluginError)
      #expect(error.message == "unknown method: fly")
    }
    do {
      _ = try await client.call(ControlMethods.execute, ExecuteParams(id: id, method: "greet"))
      Issue.record("greet without a name succeeded")
    } catch let error as ControlError {
      #expect(error.message == "name is required")
    }

    // Crash: restarted by its on-failure policy.
    let pid = try #require(info.pid)
    kill(pid_t(pid), SIGKILL)
    #expect(await eventually(timeout: .seconds(10)) {
      let now = try? await client.call(ControlMethods.get, PluginIDParams(id: id))
      return now?.status == .ready && now?.pid != pid
    })
    let again = try await client.call(ControlMethods.execute, ExecuteParams(id: id, method: "greet", args: ["name": "again"]))
    #expect(again.data["message"] == "Hello, again!")

    // Stop: go-plugin 1.0.1 answers Shutdown with Unavailable and has no GRPCStdio; both are
    // expected, so the plugin exits by itself on Shutdown (no SIGTERM after stop_timeout_ms)
    // and the supervisor logs no warning or error about the stop.
    let logBeforeStop = ((try? String(contentsOfFile: supervisor.logPath, encoding: .utf8)) ?? "").count
    let stopped = try await client.call(ControlMethods.stop, PluginIDParams(id: id))
    #expect(stopped.status == .stopped)
    #expect(stopped.lastExit?.reason == .stopped)
    #expect(stopped.lastExit?.signal == nil, "the Go plugin had to be signalled: \(String(describing: stopped.lastExit))")
    let log = (try? String(contentsOfFile: supervisor.logPath, encoding: .utf8)) ?? ""
    #expect(log.contains("plugin stopped"), "the supervisor's log was not captured")
    let errors = log.split(separator: "\n").filter { $0.contains(" error ") || $0.contains(" critical ") }
    #expect(errors.isEmpty, "\(errors)")
    let stopWarnings = log.dropFirst(logBeforeStop).split(separator: "\n").filter { $0.contains(" warning ") }
    #expect(stopWarnings.isEmpty, "\(stopWarnings)")
  }

  /// The Go host loads the Swift hello-world (and, as a control, the Go one) and gets the
  /// same answers from both.
  @Test(arguments: ["swift", "go"])
  func aGoPluginHostLoadsThePlugin(_ language: String) async throws {
    let workspace = try Workspace()
    let host = workspace.root + "/go-host"
    let build = try await runProgram("/bin/sh", [Self.repository + "/Tests/Fixtures/go-host/build.sh", host])
    try #require(build.status == 0, "building the Go host failed: \(build.stderr)")
    var binary = Binaries.helloWorld
    if language == "go" {
      _ = try Self.copyGoPlugin(into: workspace)
      let built = try await runProgram("/bin/sh", ["-c", "cd '\(workspace.plugins)/hello-world-go' && sh build.sh"])
      try #require(built.status == 0, "building hello-world-go failed: \(built.stderr)")
      binary = workspace.plugins + "/hello-world-go/bin/hello-world-go"
    }

    let result = try await runProgram(
      host, [binary, "greet", #"{"name":"Ada"}"#, "echo", #"{"a":{"b":[1,null,"x",{"t":false}],"n":2.5}}"#, "fly", "{}"])
    #expect(result.status == 0, "\(result.stderr.suffix(2000))")
    let lines = result.stdout.split(separator: "\n").compactMap { try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8)) }
    #expect(lines.count == 4, "\(result.stdout)")
    #expect(lines.first?["data"] == ["message": "Hello, Ada!"])
    #expect(lines.dropFirst().first?["data"] == ["a": ["b": [1, nil, "x", ["t": false]], "n": 2.5]])
    #expect(lines.dropFirst(2).first?["error"] == "unknown method: fly")
    // The plugin exited cleanly when the host killed it, and go-plugin read every line of
    // its stderr as hclog JSON.
    let summary = lines.last
    #expect(summary?["exited"] == true)
    #expect(summary?["graceful"] == true, "the plugin did not exit by itself on go-plugin's close: \(summary?["exit_error"] ?? nil)")
    #expect((summary?["plugin_stderr_lines"]?.numberValue ?? 0) >= 1)
    #expect(summary?["unparsed_stderr_lines"] == 0, "\(result.stderr.suffix(2000))")
  }
}
