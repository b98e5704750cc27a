import Foundation
import JankJSON
import Testing

/// The Swift SDK's go-plugin server side, checked on the real hello-world binary.
@Suite struct PluginSDKTests {
  static func pluginEnvironment(_ socketDirectory: String, cookie: String? = "jank-plugin") -> [String: String] {
    var env = ["PATH": "/usr/bin:/bin", "PLUGIN_UNIX_SOCKET_DIR": socketDirectory, "PLUGIN_PROTOCOL_VERSIONS": "1"]
    env["JANK_PLUGIN"] = cookie
    return env
  }

  @Test(arguments: [nil, "wrong", ""])
  func withoutTheCookieThePluginExplainsAndExits1(_ cookie: String?) async throws {
    let result = try await runProgram(Binaries.helloWorld, [], environment: Self.pluginEnvironment("/tmp", cookie: cookie))
    #expect(result.status == 1)
    #expect(result.stdout.isEmpty)
    #expect(result.stderr.contains("JANK_PLUGIN"))
    #expect(result.stderr.contains("jankctl register"))
  }

  @Test func anUnsupportedProtocolVersionIsRefused() async throws {
    var env = Self.pluginEnvironment("/tmp")
    env["PLUGIN_PROTOCOL_VERSIONS"] = "2,3"
    let result = try await runProgram(Binaries.helloWorld, [], environment: env)
    #expect(result.status == 1)
    #expect(result.stderr.contains("protocol versions"))
  }

  /// Starts hello-world under `sh` (its parent), returning the shell's pid, the plugin's pid
  /// and the handshake line. The shell waits, so killing it orphans the plugin.
  static func startUnderShell(_ dir: String) async throws -> (shell: Int32, plugin: Int32, handshake: String) {
    let out = dir + "/stdout"
    let script = "'\(Binaries.helloWorld)' > '\(out)' 2> '\(dir)/stderr' & echo $! > '\(dir)/pid'; wait"
    let shell = try ChildProcess("/bin/sh", ["-c", script], environment: pluginEnvironment(dir), killOnRelease: false)
    var handshake = ""
    _ = await eventually {
      handshake = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
      return handshake.hasSuffix("\n")
    }
    let pid = Int32(((try? String(contentsOfFile: dir + "/pid", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    return (shell.processIdentifier, pid, handshake)
  }

  @Test func handshakeIsTheFirstStdoutLineAndSIGINTIsIgnoredAndParentDeathEndsThePlugin() async throws {
    let dir = "/tmp/jsdk-\(UUID().uuidString.prefix(6))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let (shell, plugin, handshake) = try await Self.startUnderShell(dir)
    #expect(plugin > 0)
    let fields = handshake.dropLast().split(separator: "|", omittingEmptySubsequences: false)
    #expect(fields.count == 6, "\(handshake)")
    #expect(Array(fields.prefix(3)) == ["1", "1", "unix"])
    #expect(fields[4] == "grpc")
    #expect(fields[3].hasPrefix(dir + "/"))
    #expect(FileManager.default.fileExists(atPath: String(fields[3])))

    kill(plugin, SIGINT)
    try await Task.sleep(for: .milliseconds(300))
    #expect(!processIsGone(Int(plugin)), "SIGINT must not stop a plugin")

    kill(shell, SIGKILL)
    #expect(await eventually(timeout: .seconds(5)) { processIsGone(Int(plugin)) }, "the plugin outlived its parent")
    #expect(!FileManager.default.fileExists(atPath: String(fields[3])), "socket file left behind")
  }

  @Test func sigtermEndsThePluginGracefullyAndRemovesItsSocket() async throws {
    let dir = "/tmp/jsdk-\(UUID().uuidString.prefix(6))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let (shell, plugin, handshake) = try await Self.startUnderShell(dir)
    let socket = String(handshake.dropLast().split(separator: "|")[3])
    kill(plugin, SIGTERM)
    #expect(await eventually { processIsGone(Int(plugin)) })
    #expect(!FileManager.default.fileExists(atPath: socket))
    kill(shell, SIGKILL)
  }
}
