import Foundation
import JankControl
import JankJSON
import Testing

/// A plugin's bytes are data, never control: what jankctl shows the operator has the
/// plugin's terminal escapes escaped, and `--json` keeps them exactly.
@Suite struct HostileOutputTests {
  static let escapes: Set<UInt32> = [0x1B, 0x07, 0x202E]

  static func hasRawEscapes(_ text: String) -> Bool {
    text.unicodeScalars.contains { escapes.contains($0.value) }
  }

  @Test func aPluginsTerminalEscapesReachTheOperatorEscaped() async throws {
    let workspace = try Workspace()
    // OSC 0 (retitles the window), clear screen, red, a right-to-left override; no handshake.
    let id = try workspace.addPlugin(
      "ansi", script: #"printf '\033]0;pwned\007\033[2Jred\033[31m \342\200\256exe.txt\n' >&2; exit 3"#,
      extra: #","restart":{"policy":"never"}"#)
    let supervisor = try await SupervisorProcess(workspace)
    defer { supervisor.terminate() }

    // The failed start's error carries the plugin's last line.
    let registered = try await runProgram(Binaries.jankctl, ["register", id, "--socket", workspace.socket])
    #expect(!Self.hasRawEscapes(registered.stdout + registered.stderr), "\(registered.stdout)\(registered.stderr)")
    #expect((registered.stdout + registered.stderr).contains(#"\x1b]0;pwned\x07"#), "\(registered.stdout)\(registered.stderr)")

    let logs = try await runProgram(Binaries.jankctl, ["logs", id, "--socket", workspace.socket])
    #expect(logs.status == 0, "\(logs.stderr)")
    #expect(!Self.hasRawEscapes(logs.stdout), "\(logs.stdout)")
    #expect(logs.stdout.contains(#"\x1b]0;pwned\x07\x1b[2Jred\x1b[31m \u{202e}exe.txt"#), "\(logs.stdout)")

    let json = try await runProgram(Binaries.jankctl, ["logs", id, "--json", "--socket", workspace.socket])
    let lines = try JSONDecoder().decode(JSONValue.self, from: Data(json.stdout.utf8))["lines"]?.arrayValue ?? []
    #expect(lines.contains { $0.stringValue == "\u{1B}]0;pwned\u{07}\u{1B}[2Jred\u{1B}[31m \u{202E}exe.txt" }, "\(lines)")
  }

  /// 200 lines of 60 000 control characters (72 MB once JSON-escaped): the supervisor keeps
  /// the newest that fit its per-plugin ring (PluginLog.byteBudget, 1 MiB), `jankctl logs`
  /// answers promptly with the newest that fit the 4 MiB answer budget and says how many it
  /// left out, and the supervisor's memory and other calls are unaffected.
  @Test func aControlCharacterFloodIsAnsweredTruncatedAndEscaped() async throws {
    let workspace = try Workspace()
    let hello = try workspace.addHelloWorld("hello")
    let id = try workspace.addPlugin(
      "flood", script: #"for i in $(seq 1000); do head -c 60000 /dev/zero | tr '\0' '\001'; echo; done >&2; echo flooded >&2; exit 3"#,
      extra: #","restart":{"policy":"never"}"#)
    let stack = try await HostileStack(workspace, bystander: hello)
    defer { stack.stop() }
    _ = try await runProgram(Binaries.jankctl, ["register", id, "--socket", workspace.socket, "--timeout", "30"])
    #expect(await eventually(timeout: .seconds(20)) {
      let result = try? await runProgram(Binaries.jankctl, ["logs", id, "--tail", "1", "--json", "--socket", workspace.socket])
      let document = result.flatMap { try? JSONDecoder().decode(JSONValue.self, from: Data($0.stdout.utf8)) }
      return document?["lines"]?.arrayValue?.last?.stringValue == "flooded"
    }, "the flood never reached the plugin's log")

    let begin = ContinuousClock.now
    let json = try await runProgram(Binaries.jankctl, ["logs", id, "--tail", "1000", "--json", "--socket", workspace.socket, "--timeout", "10"])
    // Product bound: the answer is at most LogsResult.byteBudget (4 MiB) and built at once.
    #expect(ContinuousClock.now - begin < .seconds(10))
    #expect(json.status == 0, "\(json.stderr)")
    #expect(json.stdout.utf8.count <= (4 << 20) + 200)
    let document = try JSONDecoder().decode(JSONValue.self, from: Data(json.stdout.utf8))
    let kept = document["lines"]?.arrayValue?.count ?? 0
    let omitted = Int(document["omitted_lines"]?.numberValue ?? 0)
    #expect(document["truncated"] == true)
    #expect(kept > 0 && omitted > 0, "\(kept) kept, \(omitted) left out")
    // The ring holds at most its byte budget (1 MiB): about 17 of the 60 000-byte lines.
    #expect(kept + omitted < 1000 && (kept + omitted - 1) * 60_000 <= 1 << 20, "\(kept) kept, \(omitted) left out")

    let human = try await runProgram(Binaries.jankctl, ["logs", id, "--tail", "1000", "--socket", workspace.socket, "--timeout", "10"])
    #expect(human.status == 0, "\(human.stderr)")
    #expect(!human.stdout.unicodeScalars.contains { $0.value == 1 })
    #expect(human.stdout.hasPrefix(#"\x01\x01"#))
    try await stack.expectBystanderServing()
  }
}
