import Foundation
import JankJSON
import Testing

/// `jankctl metrics` against the real `jank-supervisor`: the Prometheus text, `--json`, and
/// the exit codes of the other subcommands.
@Suite(.serialized) struct JankctlMetricsTests {
  func jankctl(_ workspace: Workspace, _ arguments: [String]) async throws -> ProgramResult {
    try await runProgram(Binaries.jankctl, arguments + ["--socket", workspace.socket])
  }

  @Test func metricsPrintsThePrometheusTextAndWithJSONTheMethodsResult() async throws {
    let workspace = try Workspace()
    let id = try workspace.addHelloWorld("hello", extra: #","auto_start":true"#)
    let supervisor = try await SupervisorProcess(workspace)
    defer { supervisor.terminate() }
    #expect(await eventually(timeout: .seconds(10)) {
      (try? await jankctl(workspace, ["exec", id, "greet", "--args", #"{"name":"Ada"}"#]).status) == 0
    })

    let text = try await jankctl(workspace, ["metrics"])
    #expect(text.status == 0, "\(text.stderr)")
    #expect(text.stdout.contains("# TYPE jank_plugin_executes_total counter"), "\(text.stdout)")
    #expect(text.stdout.contains(#"jank_plugin_executes_total{plugin_id="\#(id)",outcome="ok"} 1"#), "\(text.stdout)")
    #expect(text.stdout.contains(#"jank_plugins{status="ready"} 1"#), "\(text.stdout)")
    // Exactly the exposition: one trailing newline, no blank line after it.
    #expect(text.stdout.hasSuffix("\n") && !text.stdout.hasSuffix("\n\n"))
    #expect(text.stderr.isEmpty, "\(text.stderr)")

    let json = try await jankctl(workspace, ["metrics", "--json"])
    #expect(json.status == 0, "\(json.stderr)")
    let document = try JSONDecoder().decode(JSONValue.self, from: Data(json.stdout.utf8))
    #expect(document.objectValue?.keys.sorted() == ["text"], "\(json.stdout)")
    let exposition = try #require(document["text"]?.stringValue)
    #expect(exposition.contains(#"jank_plugin_executes_total{plugin_id="\#(id)",outcome="ok"} 1"#))
    // The human output is the same text (the counters did not move in between).
    #expect(exposition == text.stdout, "\(exposition)\n---\n\(text.stdout)")
  }

  @Test func metricsExitCodesFollowTheOtherSubcommands() async throws {
    let workspace = try Workspace()
    // 3: nothing listening on the socket; --json prints the error object.
    let unreachable = try await jankctl(workspace, ["metrics"])
    #expect(unreachable.status == 3)
    #expect(unreachable.stderr.contains("cannot reach the supervisor"), "\(unreachable.stderr)")
    let unreachableJSON = try await jankctl(workspace, ["metrics", "--json"])
    #expect(unreachableJSON.status == 3)
    let error = try JSONDecoder().decode(JSONValue.self, from: Data(unreachableJSON.stdout.utf8))
    #expect(error["error"]?["kind"] == "unavailable", "\(unreachableJSON.stdout)")
    // 2: bad usage.
    #expect(try await jankctl(workspace, ["metrics", "extra"]).status == 2)
  }
}
