import Foundation
import Glibc
import JankControl
import Logging
import Synchronization

/// How a plugin is built: plugin.json `build`, else detected from the folder.
public struct BuildPlan: Sendable, Equatable {
  public var command: [String]
  /// Relative to the plugin folder: where the build leaves the binary (nil: at `binary`).
  public var output: String?

  public init(command: [String], output: String?) {
    self.command = command
    self.output = output
  }

  public static func plan(for manifest: PluginManifest, directory: String) -> BuildPlan? {
    if let build = manifest.build {
      return BuildPlan(command: build.command, output: build.output)
    }
    let exists = { (name: String) in FileManager.default.fileExists(atPath: directory + "/" + name) }
    let product = (manifest.binary as NSString).lastPathComponent
    if exists("Package.swift") {
      return BuildPlan(command: ["swift", "build", "-c", "release", "--product", product], output: ".build/release/\(product)")
    }
    if exists("go.mod") || exists("main.go") {
      return BuildPlan(command: ["go", "build", "-o", manifest.binary, "."], output: nil)
    }
    if exists("Makefile") {
      return BuildPlan(command: ["make"], output: nil)
    }
    return nil
  }
}

public struct BuildFailure: Error, Sendable, CustomStringConvertible {
  public var summary: String
  public var logTail: [String]

  public var description: String {
    logTail.isEmpty ? summary : summary + "; last lines of the build log:\n" + logTail.joined(separator: "\n")
  }
}

/// Runs build commands, one at a time by default, with a timeout, keeping the log.
public actor Builder {
  private let logDirectory: String
  private let timeout: Duration
  private let logger: Logger
  private let maxParallel: Int
  private var running = 0
  private var waiters: [(ticket: Int, continuation: CheckedContinuation<Bool, Never>)] = []
  private var nextTicket = 0

  /// Plugins the operator lets build in place as the supervisor's user although they have a
  /// uid of their own (`--build-in-place`): a build that needs more than its folder, as the
  /// example hello-world does through the repository's package.
  private let inPlace: Set<String>

  /// `timeout` applies to plugins whose plugin.json sets no `build_timeout_s`.
  public init(logDirectory: String, timeout: Duration = .seconds(900), maxParallel: Int = 1, inPlace: Set<String> = [], logger: Logger) {
    self.logDirectory = logDirectory
    self.inPlace = inPlace
    self.timeout = timeout
    self.maxParallel = max(1, maxParallel)
    self.logger = logger
  }

  /// Where the log of the plugin's last (or current) build is.
  public nonisolated func logPath(id: String) -> String { logDirectory + "/\(id).build.log" }

  /// Builds the plugin's binary; returns the build log's last lines, throws BuildFailure
  /// with them. With `uid`, the build runs as that user (gid the same) in a copy of the
  /// folder (see `BuildWorkspace`), unless the operator named the plugin in `inPlace`.
  public func build(id: String, manifest: PluginManifest, directory: String, uid: uid_t? = nil) async throws -> String {
    guard let plan = BuildPlan.plan(for: manifest, directory: directory) else {
      throw BuildFailure(summary: "no way to build \(id): add \"build\" to plugin.json, or a Package.swift, go.mod or Makefile", logTail: [])
    }
    let identity = inPlace.contains(id) ? nil : uid.map { (uid: $0, gid: gid_t($0)) }
    if let identity, let output = plan.output, let reason = BuildWorkspace.outsideReason(output) {
      throw BuildFailure(
        summary: "build of \(id) cannot run as its uid \(identity.uid): its output \(reason). Build it as the operator before starting it, "
          + "or start the supervisor with --build-in-place \(id) to let it build in place as the supervisor's user", logTail: [])
    }
    // Stopped (plugin stop, supervisor shutdown) while waiting for its turn: no build.
    guard await acquire() else { throw BuildFailure(summary: "build of \(id) was cancelled before it started", logTail: []) }
    defer { release() }
    try FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)
    let logPath = logPath(id: id)
    let timeout = manifest.buildTimeoutSeconds.map { Duration.seconds($0) } ?? self.timeout
    logger.info("building plugin", metadata: ["plugin_id": "\(id)", "command": "\(plan.command.joined(separator: " "))"])
    // A build that starts before READY=1 tells systemd how much longer to wait for it (the
    // build's timeout, and the plugin's start after it); later builds do not touch systemd.
    SystemdNotifier().extendStartTimeout(by: timeout + .milliseconds(manifest.startTimeoutMs) + .seconds(10))
    let log = try BuildLogFile(path: logPath)
    var workspace: BuildWorkspace?
    if let identity {
      let root = logDirectory + "/" + id
      workspace = try await BlockingIO.run {
        Result { () throws(BuildFailure) -> BuildWorkspace in
          let workspace = try BuildWorkspace(root: root, identity: identity)
          try workspace.sync(from: directory, keepingFolderOf: manifest.binary)
          return workspace
        }
      }.get()
    }
    let status = try await run(plan.command, in: workspace?.work ?? directory, as: workspace, log: log, timeout: timeout)
    let tail = log.tail
    switch status {
    case .some(.exited(0)):
      break
    case .some where Task.isCancelled:
      throw BuildFailure(summary: "build of \(id) was cancelled (the plugin was stopped) and its processes killed", logTail: tail)
    case .some(let status):
      throw BuildFailure(summary: "build of \(id) failed (`\(plan.command.joined(separator: " "))` \(status))", logTail: tail)
    case .none:
      throw BuildFailure(summary: "build of \(id) took longer than \(timeout.readable) and was stopped", logTail: tail)
    }
    let binary = directory + "/" + manifest.binary
    if let workspace {
      // The one file the supervisor takes from the plugin's copy, without following links.
      try FileManager.default.createDirectory(atPath: (binary as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
      let output = plan.output ?? manifest.binary
      let taken = await BlockingIO.run { Result { () throws(BuildFailure) in try workspace.takeOutput(output, to: binary) } }
      if case .failure(let failure) = taken {
        throw BuildFailure(summary: "build of \(id): " + failure.summary, logTail: tail)
      }
    } else if let output = plan.output {
      let source = directory + "/" + output
      guard FileManager.default.fileExists(atPath: source) else {
        throw BuildFailure(summary: "build of \(id) succeeded but left no file at \(output)", logTail: tail)
      }
      try FileManager.default.createDirectory(atPath: (binary as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
      // Copy then rename: a running old binary is never half-overwritten.
      let temporary = binary + ".jank-new"
      try? FileManager.default.removeItem(atPath: temporary)
      try FileManager.default.copyItem(atPath: source, toPath: temporary)
      chmod(temporary, 0o755)
      guard rename(temporary, binary) == 0 else {
        throw BuildFailure(summary: "could not install the built binary at \(manifest.binary): \(String(cString: strerror(errno)))", logTail: tail)
      }
    }
    guard access(binary, X_OK) == 0 else {
      throw BuildFailure(summary: "build of \(id) succeeded but \(manifest.binary) is not an executable file", logTail: tail)
    }
    let record = BuildFingerprint.Record(
      sha256: BuildFingerprint.compute(manifest: manifest, directory: directory, plan: plan), command: plan.command, builtAt: ISO8601.now())
    do {
      try BuildFingerprint.write(record, manifest: manifest, directory: directory)
    } catch {
      logger.warning("could not record the build's source hash; the plugin will be rebuilt next start", metadata: ["plugin_id": "\(id)", "error": "\(error)"])
    }
    return tail.joined(separator: "\n")
  }

  /// The toolchains' own settings, which a build sees beside what a plugin sees.
  static let toolchainVariables = [
    "GOPATH", "GOCACHE", "GOROOT", "GOFLAGS", "GOPROXY", "GOMODCACHE", "GO111MODULE", "GOTOOLCHAIN", "CGO_ENABLED",
    "CC", "CXX", "XDG_CACHE_HOME",
  ]

  /// A build runs plugin code (a Makefile, a package plugin), so it sees what the plugin sees
  /// of the supervisor's environment and the toolchain settings, nothing else: never
  /// JANK_API_TOKEN, NOTIFY_SOCKET, LISTEN_* or a secret in the unit's Environment=.
  static func environment() -> [String: String] {
    let inherited = ProcessInfo.processInfo.environment
    var env: [String: String] = [:]
    for key in PluginLauncher.passedThrough + toolchainVariables {
      if let value = inherited[key] { env[key] = value }
    }
    env["PATH"] = env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    return env
  }

  /// nil when the timeout stopped the build.
  private func run(_ command: [String], in directory: String, as workspace: BuildWorkspace?, log: BuildLogFile, timeout: Duration) async throws -> ExitStatus? {
    guard let program = command.first, let executable = Self.which(program) else {
      throw BuildFailure(summary: "build command '\(command.first ?? "")' was not found on PATH", logTail: [])
    }
    var request = SpawnRequest(executable: executable)
    request.arguments = Array(command.dropFirst())
    request.workingDirectory = directory
    request.environment = Self.environment()
    request.environment["CGO_ENABLED"] = request.environment["CGO_ENABLED"] ?? "0"
    if let workspace {
      // The plugin's user, and a home of its own for caches (Go's, SwiftPM's); the
      // supervisor's home is not its to write.
      request.identity = (workspace.identity.uid, workspace.identity.gid)
      request.environment["HOME"] = workspace.home
      request.environment["XDG_CACHE_HOME"] = workspace.home + "/.cache"
      for key in ["GOPATH", "GOCACHE", "GOMODCACHE"] { request.environment[key] = nil }  // the supervisor's, under its home
    }
    if program == "go" {
      // Offline and predictable: never fetch modules; a folder without go.mod builds in
      // GOPATH mode against the system's Go packages (Debian's /usr/share/gocode).
      request.environment["GOPROXY"] = request.environment["GOPROXY"] ?? "off"
      if !FileManager.default.fileExists(atPath: directory + "/go.mod") {
        request.environment["GO111MODULE"] = "off"
        let home = request.environment["HOME"] ?? "/root"
        request.environment["GOPATH"] = request.environment["GOPATH"] ?? "\(home)/go:/usr/share/gocode"
      }
    }
    let process = try await ProcessSpawner.spawn(request)
    let stdoutDone = OneShot<Bool>()
    let stderrDone = OneShot<Bool>()
    try await OutputReader.start(fd: process.stdout, onLine: log.append, onEnd: { stdoutDone.deliver(true) })
    try await OutputReader.start(fd: process.stderr, onLine: log.append, onEnd: { stderrDone.deliver(true) })
    // A cancelled build (its plugin stopped, the supervisor shutting down) is killed with
    // everything it started, instead of running on to its timeout.
    let status = await withTaskCancellationHandler {
      await ProcessReaper.shared.waitForExit(pid: process.pid, within: timeout)
    } onCancel: {
      kill(-process.pid, SIGKILL)
    }
    if status == nil {
      kill(-process.pid, SIGKILL)
      _ = await ProcessReaper.shared.waitForExit(pid: process.pid)
    }
    ProcessReaper.shared.forget(pid: process.pid)
    // Keep every last line: wait for both pipes to reach EOF (bounded, in case the build left
    // a background process holding them open).
    await withTaskGroup(of: Void.self) { group in
      group.addTask {
        _ = await stdoutDone.wait()
        _ = await stderrDone.wait()
      }
      group.addTask { try? await Task.sleep(for: .seconds(2)) }
      await group.next()
      group.cancelAll()
    }
    log.close()
    return status
  }

  static func which(_ program: String) -> String? {
    if program.contains("/") { return program }
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for dir in path.split(separator: ":") {
      let candidate = "\(dir)/\(program)"
      if access(candidate, X_OK) == 0 { return candidate }
    }
    return nil
  }

  /// At most `maxParallel` builds at once (one by default: builds are CPU- and memory-hungry).
  /// False when the task was cancelled before its turn came (it then holds no place).
  private func acquire() async -> Bool {
    if running < maxParallel {
      running += 1
      return true
    }
    nextTicket += 1
    let ticket = nextTicket
    return await withTaskCancellationHandler {
      await withCheckedContinuation { continuation in
        if Task.isCancelled {
          continuation.resume(returning: false)
        } else {
          waiters.append((ticket, continuation))
        }
      }
    } onCancel: {
      Task { await self.leaveQueue(ticket) }
    }
  }

  private func leaveQueue(_ ticket: Int) {
    guard let index = waiters.firstIndex(where: { $0.ticket == ticket }) else { return }
    waiters.remove(at: index).continuation.resume(returning: false)
  }

  /// Hands the place to the next waiter, if any.
  private func release() {
    if waiters.isEmpty {
      running -= 1
    } else {
      waiters.removeFirst().continuation.resume(returning: true)
    }
  }
}
