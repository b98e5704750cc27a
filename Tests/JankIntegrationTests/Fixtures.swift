import Foundation
import JankControl
import JankJSON
import JankSupervisorCore
import Logging
import Testing

/// The in-process supervisors' logger: warnings and errors only, so that a test run's output
/// stays readable (JANK_TEST_LOG_LEVEL=debug shows everything).
let testLogger: Logger = {
  var logger = Logger(label: "test-supervisor")
  logger.logLevel = ProcessInfo.processInfo.environment["JANK_TEST_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
  return logger
}()

/// Where SwiftPM put the binaries this test target depends on.
enum Binaries {
  static let directory: String = {
    if let dir = ProcessInfo.processInfo.environment["JANK_BIN_DIR"] { return dir }
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var dir = (exe as NSString).deletingLastPathComponent
    // The test bundle may sit inside `<bin>/X.xctest/…`: walk up to the folder with our products.
    while !dir.isEmpty, dir != "/", !FileManager.default.fileExists(atPath: dir + "/jank-supervisor") {
      dir = (dir as NSString).deletingLastPathComponent
    }
    return dir
  }()

  /// Where plugins find the binaries they run. Plugins run as uids of their own (uid
  /// isolation), which cannot reach a build folder below a private one (a clone in a 0700
  /// temporary folder, as CI and test-repeat.sh make): then hard links (or copies) in a
  /// folder of /tmp that every user may read, named after the binaries' identities.
  static let forPlugins: String = {
    guard !reachableByEveryone(directory) else { return directory }
    let names = ["hello-world", "fault-plugin", "jankctl"]
    var identity = ""
    for name in names {
      var info = stat()
      stat(directory + "/" + name, &info)
      identity += "-\(info.st_ino)x\(info.st_mtim.tv_sec)"
    }
    let shared = "/tmp/jank-test-bin" + identity
    if !FileManager.default.fileExists(atPath: shared + "/" + names.last!) {
      let staging = shared + ".\(getpid())"
      try? FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
      for name in names where link(directory + "/" + name, staging + "/" + name) != 0 {
        try? FileManager.default.copyItem(atPath: directory + "/" + name, toPath: staging + "/" + name)
      }
      chmod(staging, 0o755)
      if rename(staging, shared) != 0 { try? FileManager.default.removeItem(atPath: staging) }
    }
    return shared
  }()

  /// Every folder from / down to `path` lets others search it.
  private static func reachableByEveryone(_ path: String) -> Bool {
    var current = path
    while !current.isEmpty, current != "/" {
      var info = stat()
      guard stat(current, &info) == 0, info.st_mode & 0o001 != 0 else { return false }
      current = (current as NSString).deletingLastPathComponent
    }
    return true
  }

  static var helloWorld: String { forPlugins + "/hello-world" }
  static var faultPlugin: String { forPlugins + "/fault-plugin" }
  static var supervisor: String { directory + "/jank-supervisor" }
  static var jankctl: String { forPlugins + "/jankctl" }
  static var api: String { directory + "/jank-api" }
}

/// A temporary plugins folder plus state folder, short enough for socket paths.
final class Workspace: @unchecked Sendable {
  let root = "/tmp/jit-\(UUID().uuidString.prefix(8).lowercased())"
  var plugins: String { root + "/plugins" }
  var state: String { root + "/state" }
  var socket: String { state + "/supervisor.sock" }

  init() throws {
    _ = StallProbe.started
    try FileManager.default.createDirectory(atPath: plugins, withIntermediateDirectories: true)
    try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
    // Plugins run as uids of their own; tests have them leave markers here.
    chmod(root, 0o1777)
  }

  deinit { try? FileManager.default.removeItem(atPath: root) }

  /// Writes a plugin folder: plugin.json (`id`, `binary` = bin/run, plus `extra` fields)
  /// and, when given, `bin/run` as an executable shell script.
  @discardableResult
  func addPlugin(_ name: String, id: String? = nil, script: String?, extra: String = "") throws -> String {
    let dir = plugins + "/" + name
    try FileManager.default.createDirectory(atPath: dir + "/bin", withIntermediateDirectories: true)
    let manifest = #"{"id":"\#(id ?? "dev.test.\(name)")","name":"\#(name)","version":"1.0.0","type":"handler","binary":"bin/run"\#(extra)}"#
    try writeText(manifest, to: dir + "/plugin.json")
    if let script {
      try writeText("#!/bin/sh\n" + script + "\n", to: dir + "/bin/run")
      chmod(dir + "/bin/run", 0o755)
    }
    return id ?? "dev.test.\(name)"
  }

  /// The fault plugin (see Tests/Fixtures/fault-plugin).
  @discardableResult
  func addFaultPlugin(_ name: String = "fault", extra: String = "") throws -> String {
    try addPlugin(name, script: "exec '\(Binaries.faultPlugin)' \"$@\"", extra: extra)
  }

  /// A copy of the Swift hello-world plugin (a script that execs the built binary).
  @discardableResult
  func addHelloWorld(_ name: String = "hello", extra: String = "") throws -> String {
    try addPlugin(name, script: "exec '\(Binaries.helloWorld)' \"$@\"", extra: extra)
  }
}

/// An in-process supervisor serving its control socket, with a connected client.
final class RunningSupervisor: @unchecked Sendable {
  let supervisor: Supervisor
  let client: ControlClient
  private let serving: Task<Void, Never>

  init(_ workspace: Workspace) async throws {
    supervisor = Supervisor(
      configuration: SupervisorConfiguration(pluginsDirectory: workspace.plugins, stateDirectory: workspace.state, socketPath: workspace.socket),
      logger: testLogger)
    let server = try await ControlServer.bind(path: workspace.socket, router: supervisor.makeRouter(), logger: Logger(label: "test"))
    serving = Task { await server.run() }
    client = try await ControlClient.connect(path: workspace.socket)
  }

  func shutdown() async {
    await supervisor.stopAll()
    await client.close()
    serving.cancel()
  }
}

/// The real `jank-supervisor` binary as a child of the test, for what must be observed from
/// outside: its file descriptors, its children, signals sent to it.
final class SupervisorProcess: @unchecked Sendable {
  let process: ChildProcess
  let workspace: Workspace
  var pid: Int32 { process.pid }

  /// The supervisor's own log (stderr), when asked for.
  var logPath: String { workspace.root + "/supervisor.log" }

  /// `cgroups`: folders (one per v1 hierarchy) the supervisor is moved into before it runs.
  init(_ workspace: Workspace, environment: [String: String] = [:], keepLog: Bool = false, cgroups: [String] = []) async throws {
    self.workspace = workspace
    var executable = Binaries.supervisor
    var arguments = ["--plugins-dir", workspace.plugins, "--state-dir", workspace.state]
    if !cgroups.isEmpty {
      // A shell that joins the cgroups, then execs the supervisor (same pid).
      let joins = cgroups.map { "echo $$ > '\($0)/cgroup.procs' && " }.joined()
      arguments = ["-c", joins + #"exec "$0" "$@""#, executable] + arguments
      executable = "/bin/sh"
    }
    // Not the test's stdout: `swift test` waits for that pipe to close, so a supervisor that
    // outlived a failed test would hang the whole run.
    process = try ChildProcess(
      executable, arguments,
      environment: ProcessInfo.processInfo.environment.merging(environment) { $1 },
      stdout: .null, stderr: keepLog ? .file(workspace.root + "/supervisor.log") : .null)
    let socket = workspace.socket
    guard await eventually(timeout: .seconds(15), { FileManager.default.fileExists(atPath: socket) }) else {
      throw CocoaError(.fileNoSuchFile)
    }
  }

  /// SIGTERM, without waiting (for `defer`); the child's own thread reaps it.
  func terminate() {
    process.terminate()
  }

  /// SIGTERM, and returns once the supervisor exited.
  func terminateAndWait() async {
    process.terminate()
    await process.waitUntilExit()
  }

  func killHard() async {
    if process.isRunning { kill(pid, SIGKILL) }
    await process.waitUntilExit()
  }
}

/// Writes a file without fsync. Foundation's `String.write(toFile:)` fsyncs even when not
/// atomic, and on a loaded disk that held a thread of the cooperative pool for seconds (a
/// stall probe caught it in `addPlugin`: a blocked pool thread stalls every in-process
/// supervisor of the run).
func writeText(_ text: String, to path: String) throws {
  let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
  guard fd >= 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path]) }
  defer { close(fd) }
  var bytes = Array(text.utf8)[...]
  while !bytes.isEmpty {
    let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    if n < 0, errno == EINTR { continue }
    guard n > 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path]) }
    bytes = bytes.dropFirst(n)
  }
}

func withSupervisor(_ body: (Workspace, RunningSupervisor) async throws -> Void) async throws {
  let workspace = try Workspace()
  let running = try await RunningSupervisor(workspace)
  do {
    try await body(workspace, running)
  } catch {
    await running.shutdown()
    throw error
  }
  await running.shutdown()
}

extension RunningSupervisor {
  /// Waits until plugin `id` is ready again in a process other than `pid`; its info then.
  func restarted(_ id: String, replacing pid: Int?, within timeout: Duration = .seconds(10)) async throws -> PluginInfo {
    let back = await eventually(timeout: timeout) {
      let now = try? await self.client.call(ControlMethods.get, PluginIDParams(id: id))
      return now?.status == .ready && now?.pid != nil && now?.pid != pid
    }
    let info = try await client.call(ControlMethods.get, PluginIDParams(id: id))
    try #require(back, "plugin \(id) did not come back after pid \(pid ?? 0): \(info.status) \(info.lastError ?? "")")
    return info
  }
}

/// True when no live (non-zombie) process has this pid.
func processIsGone(_ pid: Int) -> Bool {
  guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return true }
  return status.contains("State:\tZ")
}

/// Polls `condition` until it holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(5), _ condition: () async -> Bool) async -> Bool {
  let deadline = ContinuousClock.now + timeout
  while ContinuousClock.now < deadline {
    if await condition() { return true }
    try? await Task.sleep(for: .milliseconds(20))
  }
  return await condition()
}
