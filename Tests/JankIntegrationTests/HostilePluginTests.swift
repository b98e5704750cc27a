import Foundation
import JankControl
import JankJSON
import Testing

/// Plugins that attack what is not theirs: each attack fails with the error a user would
/// expect, and the supervisor and a sibling plugin still answer afterwards. (The trust
/// boundary's uid and namespace separation is not built yet; these are the checks that do not
/// depend on it.)
@Suite struct HostilePluginTests {
  /// How a thief points its handshake at its sibling's socket.
  enum Theft: String, CaseIterable, Sendable {
    /// The sibling's path as it is.
    case direct
    /// A symlink in the thief's own socket folder.
    case symlink
    /// A hard link there: same inode, so a connect reaches the sibling.
    case hardLink
  }

  /// With the supervisor's uid (`--plugin-uid-range off`), so that the thief can reach the
  /// sibling's socket and the supervisor's own check is what stops it. (With uids of their
  /// own, the sibling's socket folder is closed to the thief as well.)
  @Test(arguments: Theft.allCases)
  func aHandshakeThatNamesASiblingsSocketFailsAndTheSiblingServes(_ theft: Theft) async throws {
    let workspace = try Workspace()
    let sibling = try workspace.addHelloWorld("sibling")
    let claim =
      switch theft {
      case .direct: #"echo "1|1|unix|$s|jank-frame|""#
      case .symlink: #"ln -s "$s" "$PLUGIN_UNIX_SOCKET_DIR/s" && echo "1|1|unix|$PLUGIN_UNIX_SOCKET_DIR/s|jank-frame|""#
      case .hardLink: #"ln "$s" "$PLUGIN_UNIX_SOCKET_DIR/s" && echo "1|1|unix|$PLUGIN_UNIX_SOCKET_DIR/s|jank-frame|""#
      }
    // Finds the sibling's socket the way a plugin could: in the folder next to its own.
    let thief = try workspace.addPlugin(
      "thief",
      script: #"for s in '\#(workspace.state)'/run/*/*; do [ -S "$s" ] && [ "${s%/*}" != "$PLUGIN_UNIX_SOCKET_DIR" ] && { \#(claim); break; }; done; sleep 30"#,
      extra: #","restart":{"policy":"never"}"#)
    let stack = try await HostileStack(workspace, bystander: sibling, environment: Mode.none.environment)
    defer { stack.stop() }

    let info = try await stack.client.call(ControlMethods.register, RegisterParams(id: thief), timeout: .seconds(20))
    #expect(info.status == .error)
    #expect(info.lastExit?.reason == .handshakeFailed)
    let expected = theft == .direct ? "not in the folder assigned to this start" : "not by the plugin (process"
    #expect(info.lastError?.contains(expected) == true, "\(theft): \(info.lastError ?? "nil")")
    // Unregistering the thief removes nothing of the sibling's.
    _ = try await stack.client.call(ControlMethods.unregister, PluginIDParams(id: thief), timeout: .seconds(10))
    try await stack.expectBystanderServing()
  }

  /// A binary whose SHA-256 is not plugin.json's never starts, and is not restarted in a
  /// loop; one that matches starts, and a binary replaced under it is refused at the restart.
  @Test func aBinaryWithAnotherDigestIsRefusedBeforeEveryExec() async throws {
    let workspace = try Workspace()
    let bystander = try workspace.addHelloWorld("hello")
    let wrong = String(repeating: "0", count: 64)
    let forged = try workspace.addPlugin("forged", script: "exec '\(Binaries.helloWorld)' \"$@\"", extra: #","sha256":"\#(wrong)""#)
    let script = "#!/bin/sh\nexec '\(Binaries.helloWorld)' \"$@\"\n"
    let digest = try await sha256(of: script)
    let pinned = try workspace.addPlugin("pinned", script: nil, extra: #","sha256":"\#(digest)""#)
    try writeText(script, to: workspace.plugins + "/pinned/bin/run")
    chmod(workspace.plugins + "/pinned/bin/run", 0o755)
    let stack = try await HostileStack(workspace, bystander: bystander)
    defer { stack.stop() }
    let client = stack.client

    let refused = try await client.call(ControlMethods.register, RegisterParams(id: forged), timeout: .seconds(20))
    #expect(refused.status == .error)
    #expect(refused.lastExit?.reason == .digestMismatch)
    #expect(refused.lastError?.contains(wrong) == true && refused.lastError?.contains("sha256sum") == true, "\(refused.lastError ?? "nil")")
    try await Task.sleep(for: .seconds(1))
    let later = try await client.call(ControlMethods.get, PluginIDParams(id: forged))
    #expect(later.status == .error && later.restarts == 0 && later.pid == nil, "\(later.status) after \(later.restarts) restarts")

    let started = try await client.call(ControlMethods.register, RegisterParams(id: pinned), timeout: .seconds(20))
    #expect(started.status == .ready, "\(started.lastError ?? "")")
    // The binary is swapped for another program, then the plugin crashes: the restart refuses it.
    try writeText("#!/bin/sh\necho replaced\n", to: workspace.plugins + "/pinned/bin/run")
    kill(pid_t(try #require(started.pid)), SIGKILL)
    #expect(await eventually(timeout: .seconds(10)) {
      (try? await client.call(ControlMethods.get, PluginIDParams(id: pinned)))?.lastExit?.reason == .digestMismatch
    })
    let after = try await client.call(ControlMethods.get, PluginIDParams(id: pinned))
    #expect(after.status == .error && after.pid == nil, "\(after.status): \(after.lastError ?? "nil")")
    try await stack.expectBystanderServing()
  }

  /// A build dumps its environment, and so does the plugin: neither sees the supervisor's
  /// token or any other variable of its own, and both run with no_new_privs.
  @Test func neitherABuildNorAPluginSeesTheSupervisorsSecrets() async throws {
    let workspace = try Workspace()
    let bystander = try workspace.addHelloWorld("hello")
    let out = workspace.root
    let id = try workspace.addPlugin(
      "dumper",
      script: "env > '\(out)/plugin-env.txt'; grep NoNewPrivs /proc/self/status > '\(out)/plugin-nnp.txt'; exec '\(Binaries.helloWorld)' \"$@\"",
      extra: #","build":{"command":["sh","-c","env > '\#(out)/build-env.txt'; grep NoNewPrivs /proc/self/status > '\#(out)/build-nnp.txt'"]}"#)
    let stack = try await HostileStack(workspace, bystander: bystander, environment: ["JANK_API_TOKEN": "token-5ecret", "SECRET_DB_PASSWORD": "hunter2-5ecret"])
    defer { stack.stop() }

    let info = try await stack.client.call(ControlMethods.register, RegisterParams(id: id), timeout: .seconds(30))
    #expect(info.status == .ready, "\(info.lastError ?? "")")
    for who in ["build", "plugin"] {
      let env = try String(contentsOfFile: "\(out)/\(who)-env.txt", encoding: .utf8)
      #expect(!env.contains("5ecret"), "the \(who) saw a secret of the supervisor's:\n\(env)")
      #expect(env.contains("PATH="), "the \(who)'s environment: \(env)")
      let nnp = try String(contentsOfFile: "\(out)/\(who)-nnp.txt", encoding: .utf8)
      #expect(nnp.contains("NoNewPrivs:\t1"), "the \(who): \(nnp)")
    }
    try await stack.expectBystanderServing()
  }
}

extension HostilePluginTests {
  /// With the supervisor's uid, Landlock's scopes (each plugin a domain of its own) still keep
  /// a plugin from signalling the supervisor or its sibling, while it signals its own children
  /// as usual. (Landlock's ptrace check, which also closes /proc/PID/environ, spares a plugin
  /// that runs as root, as this suite's `off` mode does; so it is not asserted here.)
  @Test func withTheSupervisorsUidAPluginStillCannotSignalOrTraceOthers() async throws {
    let workspace = try Workspace()
    let sibling = try workspace.addHelloWorld("sibling")
    let stack = try await HostileStack(workspace, bystander: sibling, environment: Mode.none.environment)
    defer { stack.stop() }
    let target = try await stack.client.call(ControlMethods.get, PluginIDParams(id: sibling))
    #expect(target.isolation == "none")
    #expect(target.isolationNote?.contains("Landlock keeps them from signalling") == true, "this kernel must offer Landlock ABI 6: \(target.isolationNote ?? "")")
    let siblingPID = try #require(target.pid)
    let out = workspace.root + "/attacks.txt"
    let attacks = [
      "kill-supervisor": "kill -9 \(stack.supervisor.pid)",
      "kill-sibling": "kill -9 \(siblingPID)",
    ]
    // The control: what the plugin started is its own to signal.
    let script = attacks.sorted { $0.key < $1.key }.map { "{ \($0.value); } >/dev/null 2>&1; echo \"\($0.key) $?\" >> '\(out)'" }
      + ["sleep 30 & kill $! && echo 'own-child 0' >> '\(out)'"]
    let id = try workspace.addPlugin("attacker", script: script.joined(separator: "\n") + "\nexec '\(Binaries.helloWorld)' \"$@\"")
    let info = try await stack.client.call(ControlMethods.register, RegisterParams(id: id), timeout: .seconds(30))
    #expect(info.status == .ready, "\(info.lastError ?? "")")
    let results = try String(contentsOfFile: out, encoding: .utf8)
    for name in attacks.keys {
      #expect(results.contains("\(name) ") && !results.contains("\(name) 0\n"), "\(name) succeeded:\n\(results)")
    }
    #expect(results.contains("own-child 0\n"), "the plugin could not signal its own child:\n\(results)")
    let again = try await stack.client.call(ControlMethods.get, PluginIDParams(id: sibling))
    #expect(again.status == .ready && again.pid == target.pid)
    try await stack.expectBystanderServing()
  }

  /// The two ways the supervisor can run here (as root in CI): each plugin as a uid of its
  /// own, and with `--plugin-uid-range off` as the supervisor's user.
  enum Mode: String, CaseIterable, Sendable {
    case uid, none
    var environment: [String: String] { self == .none ? ["JANK_PLUGIN_UID_RANGE": "off"] : [:] }
  }

  /// A plugin that runs `jankctl` against the control socket (it knows the path: the state
  /// folder is next to its socket folder) to stop its sibling. With a uid of its own the
  /// socket's permissions refuse it; with the supervisor's uid the supervisor refuses it,
  /// because it runs in a plugin's cgroup.
  @Test(arguments: Mode.allCases)
  func aPluginCannotUseTheControlChannel(_ mode: Mode) async throws {
    let workspace = try Workspace()
    let sibling = try workspace.addHelloWorld("sibling")
    let out = workspace.root + "/jankctl.txt"
    let id = try workspace.addPlugin(
      "operator",
      script: "'\(Binaries.jankctl)' stop \(sibling) --socket '\(workspace.socket)' --timeout 5 > '\(out)' 2>&1; echo \"exit $?\" >> '\(out)'; exec '\(Binaries.helloWorld)' \"$@\"")
    let stack = try await HostileStack(workspace, bystander: sibling, environment: mode.environment)
    defer { stack.stop() }
    let before = try await stack.client.call(ControlMethods.get, PluginIDParams(id: sibling))
    #expect(before.isolation == mode.rawValue, "\(before.isolation ?? "nil"): \(before.isolationNote ?? "")")
    // Without uids the defence needs the plugins' cgroups; a machine without them fails here, it does not pass.
    #expect(before.limitsEnforced?.hasPrefix("cgroup-") == true, "plugins run with \(before.limitsEnforced ?? "nil") here, so the control channel cannot tell them apart")
    print("HostilePluginTests: isolation \(mode.rawValue), limits \(before.limitsEnforced ?? "nil")")

    let info = try await stack.client.call(ControlMethods.register, RegisterParams(id: id), timeout: .seconds(30))
    #expect(info.status == .ready, "\(info.lastError ?? "")")
    let answer = try String(contentsOfFile: out, encoding: .utf8)
    let refusal = mode == .uid ? "ermission denied" : "plugins may not use the supervisor's control channel"
    #expect(answer.contains(refusal) && !answer.contains("exit 0"), "jankctl in the plugin said: \(answer)")
    let after = try await stack.client.call(ControlMethods.get, PluginIDParams(id: sibling))
    #expect(after.status == .ready && after.pid == before.pid)
    try await stack.expectBystanderServing()
  }

  /// As a uid of its own, a plugin can neither signal the supervisor or its sibling, nor read
  /// the state file, nor raise its own cgroup limit, nor look into the sibling's socket folder.
  @Test func aPluginWithAUidOfItsOwnCannotTouchTheSupervisorOrItsSibling() async throws {
    let workspace = try Workspace()
    let sibling = try workspace.addHelloWorld("sibling")
    let stack = try await HostileStack(workspace, bystander: sibling)
    defer { stack.stop() }
    let target = try await stack.client.call(ControlMethods.get, PluginIDParams(id: sibling))
    #expect(target.isolation == "uid", "this suite runs as root in CI, so plugins must get uids of their own: \(target.isolationNote ?? "")")
    #expect(target.limitsEnforced?.hasPrefix("cgroup-") == true, "the memory limit attack needs cgroups here, not \(target.limitsEnforced ?? "nil")")
    let siblingPID = try #require(target.pid)
    let out = workspace.root + "/attacks.txt"
    let attacks = [
      "kill-supervisor": "kill -9 \(stack.supervisor.pid)",
      "kill-sibling": "kill -9 \(siblingPID)",
      "read-state": "cat '\(workspace.state)/state.json'",
      // cgroup v2's memory.max, or v1's memory.limit_in_bytes (hybrid hosts).
      "write-memory-limit": #"echo 1 > "$(cat '\#(workspace.root)/memory-file')""#,
      "list-sibling-socket-folder": "ls '\(workspace.state)/run/1'",
    ]
    let findLimit = #"""
      p=$(sed -n 's/^0:://p' /proc/self/cgroup); f="/sys/fs/cgroup$p/memory.max"
      [ -e "$f" ] || { p=$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup); f="/sys/fs/cgroup/memory$p/memory.limit_in_bytes"; }
      echo "$f" > '\#(workspace.root)/memory-file'
      """#
    let script = [findLimit] + attacks.sorted { $0.key < $1.key }.map { "{ \($0.value); } >/dev/null 2>&1; echo \"\($0.key) $?\" >> '\(out)'" }
    let id = try workspace.addPlugin(
      "attacker", script: script.joined(separator: "\n") + "\necho \"uid $(id -u)\" >> '\(out)'\nexec '\(Binaries.helloWorld)' \"$@\"")

    let info = try await stack.client.call(ControlMethods.register, RegisterParams(id: id), timeout: .seconds(30))
    #expect(info.status == .ready, "\(info.lastError ?? "")")
    let results = try String(contentsOfFile: out, encoding: .utf8)
    let limitFile = try String(contentsOfFile: workspace.root + "/memory-file", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    #expect(FileManager.default.fileExists(atPath: limitFile), "the plugin's memory limit file \(limitFile) does not exist: the attack missed")
    for name in attacks.keys {
      #expect(results.contains("\(name) ") && !results.contains("\(name) 0\n"), "\(name) succeeded:\n\(results)")
    }
    #expect(info.uid != nil && info.uid != target.uid && results.contains("uid \(info.uid ?? -1)\n"), "\(results)")
    let again = try await stack.client.call(ControlMethods.get, PluginIDParams(id: sibling))
    #expect(again.status == .ready && again.pid == target.pid)
    try await stack.expectBystanderServing()

    // The uid is the plugin's for good: recorded in the state file, the same after a
    // registration is dropped and made again.
    let saved = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: URL(fileURLWithPath: workspace.state + "/state.json")))
    let entry = saved["plugins"]?.arrayValue?.first { $0["id"]?.stringValue == id }
    #expect(entry?["uid"]?.numberValue.map { Int($0) } == info.uid, "\(String(describing: entry))")
    _ = try await stack.client.call(ControlMethods.unregister, PluginIDParams(id: id), timeout: .seconds(10))
    let back = try await stack.client.call(ControlMethods.register, RegisterParams(id: id), timeout: .seconds(30))
    #expect(back.uid == info.uid)
  }
}

extension HostilePluginTests {
  /// With the supervisor's uid a plugin can reach its sibling's socket and connect; the SDK
  /// hangs up on whoever is not its host (an ancestor of the plugin), and says so in its log,
  /// on either transport.
  @Test(arguments: ["jank-frame", "gRPC"])
  func aPluginThatConnectsToItsSiblingsSocketIsHungUpOn(_ transport: String) async throws {
    let workspace = try Workspace()
    let victim = try workspace.addHelloWorld("victim", extra: transport == "gRPC" ? #","transport":"grpc""# : "")
    let attacker = try workspace.addFaultPlugin("attacker")
    let stack = try await HostileStack(workspace, bystander: victim, environment: Mode.none.environment)
    defer { stack.stop() }
    let client = stack.client
    let registered = try await client.call(ControlMethods.register, RegisterParams(id: attacker), timeout: .seconds(30))
    #expect(registered.status == .ready, "\(registered.lastError ?? "")")
    // The victim registered first: its socket folder is run/1.
    let folder = workspace.state + "/run/1"
    let socket = try #require(try FileManager.default.contentsOfDirectory(atPath: folder).first { $0.hasSuffix(".sock") })

    let probe = try await client.call(
      ControlMethods.execute, ExecuteParams(id: attacker, method: "probe-socket", args: ["path": .string(folder + "/" + socket)]), timeout: .seconds(10))
    #expect(probe.data["connected"] == true && probe.data["closed_by_peer"] == true, "\(probe.data)")
    let logs = try await client.call(ControlMethods.logs, LogsParams(id: victim, tail: 20))
    #expect(logs.lines.contains { $0.contains("refused a \(transport) connection from process \(registered.pid ?? -1)") }, "\(logs.lines)")
    #expect(try await client.call(ControlMethods.get, PluginIDParams(id: victim)).transport == (transport == "gRPC" ? "grpc" : "jank-frame"))
    try await stack.expectBystanderServing()
  }
}

private func sha256(of text: String) async throws -> String {
  let path = NSTemporaryDirectory() + "jank-digest-\(UUID().uuidString)"
  try writeText(text, to: path)
  defer { unlink(path) }
  let result = try await runProgram("/usr/bin/sha256sum", [path])
  return String(result.stdout.prefix(64))
}
