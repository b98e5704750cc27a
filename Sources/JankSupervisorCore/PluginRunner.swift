import Foundation
import Glibc
import JankControl
import JankJSON
import Logging

/// Owns one registered plugin: its process, its connection and its status. An actor, so
/// calls to different plugins never wait on each other, and no lock is held across I/O:
/// executes run concurrently on the connection while the actor only counts them.
actor PluginRunner {
  let id: String
  let directory: String
  let log: PluginLog
  let manifest: PluginManifest
  private let socketDirectory: String
  private let launcher: any PluginLaunching
  private let builder: Builder
  private let metrics: SupervisorMetrics
  private let logger: Logger

  private var status: PluginStatus = .stopped
  private var wantsRunning = false
  private var current: Running?
  private var starting: Task<Void, Never>?
  private var stopping = false
  private var generation = 0
  private var inFlight = 0
  private var restarts = 0
  private var planner: RestartPlanner
  private var nextRestartAt: Date?
  private var restartTimer: Task<Void, Never>?
  private var healthTask: Task<Void, Never>?
  /// Why the supervisor itself killed the current process (health checks), if it did.
  private var killReason: LastExit.Reason?
  /// Delivered `true` when a starting or restarting plugin becomes ready, `false` when it
  /// ends in error or stopped; calls that arrive meanwhile wait on it.
  private var readiness: OneShot<Bool>?
  private var lastExit: LastExit?
  private var lastError: String?

  private struct Running {
    var generation: Int
    var pid: pid_t
    var connection: any PluginConnection
    var startedAt: Date
    var startedAtMonotonic: ContinuousClock.Instant
  }

  init(
    manifest: PluginManifest, directory: String, socketDirectory: String,
    launcher: any PluginLaunching, builder: Builder, metrics: SupervisorMetrics, logger: Logger
  ) {
    self.id = manifest.id
    self.manifest = manifest
    self.directory = directory
    self.socketDirectory = socketDirectory
    self.launcher = launcher
    self.builder = builder
    self.metrics = metrics
    self.logger = logger
    self.log = PluginLog(pluginID: manifest.id, logger: logger)
    self.planner = RestartPlanner(policy: manifest.restart)
  }

  var info: PluginInfo {
    PluginInfo(
      id: id, name: manifest.name, version: manifest.version, type: manifest.type,
      description: manifest.description, author: manifest.author, directory: directory,
      binary: manifest.binary, status: status, desired: wantsRunning ? "running" : "stopped",
      autoStart: manifest.autoStart, pid: current.map { Int($0.pid) },
      startedAt: current.map { ISO8601.format($0.startedAt) },
      uptimeSeconds: current.map { ($0.startedAtMonotonic.duration(to: .now)).seconds },
      restarts: restarts, consecutiveFailures: planner.consecutiveFailures, inFlight: inFlight,
      lastExit: lastExit, lastError: lastError, nextRestartAt: nextRestartAt.map(ISO8601.format), transport: current?.connection.transportName,
      limits: manifest.limits.isEmpty ? nil : .object(manifest.limits), limitsEnforced: nil)
  }

  // MARK: start

  /// Starts the plugin (building it first when its binary is missing) and returns once it
  /// is ready or has failed. Concurrent calls join the same start.
  func start() async -> PluginInfo {
    wantsRunning = true
    if current != nil { return info }
    if let starting {
      await starting.value
      return info
    }
    // An operator's start leaves `error` and `backoff` at once, with a fresh restart budget.
    if status == .error || status == .backoff { planner.reset() }
    cancelRestartTimer()
    lastError = nil
    await runLaunch()
    return info
  }

  private func runLaunch() async {
    let task = Task { await self.launch() }
    starting = task
    await task.value
    starting = nil
  }

  private func launch() async {
    // `last_error` keeps the reason of the last failure until an operator starts the plugin.
    setStatus(.starting)
    let binaryPath = directory + "/" + manifest.binary
    if access(binaryPath, X_OK) != 0 {
      do {
        _ = try await builder.build(id: id, manifest: manifest, directory: directory)
      } catch {
        fail("\(error)")
        return
      }
    }
    guard wantsRunning else {
      setStatus(.stopped)
      return
    }
    do {
      try prepareSocketDirectory()
    } catch {
      fail("cannot create the plugin's socket directory \(socketDirectory): \(error)")
      return
    }
    let launched: LaunchedPlugin
    do {
      launched = try await launcher.launch(manifest: manifest, directory: directory, socketDirectory: socketDirectory, log: log)
    } catch {
      lastExit = LastExit(reason: error.reason, exit: error.exit)
      removeSocketDirectory()
      ended(reason: error.reason, code: error.exit?.code, uptime: nil, message: "start failed: \(error.message)")
      return
    }
    generation += 1
    let running = Running(
      generation: generation, pid: launched.pid, connection: launched.connection,
      startedAt: Date(), startedAtMonotonic: .now)
    current = running
    setStatus(inFlight > 0 ? .running : .ready)
    logger.info("plugin ready", metadata: ["plugin_id": "\(id)", "pid": "\(launched.pid)"])
    let pid = launched.pid
    let generation = running.generation
    Task { [weak self] in
      let exit = await ProcessReaper.shared.waitForExit(pid: pid)
      await self?.processExited(generation: generation, status: exit)
    }
    healthTask = Task { [weak self, health = manifest.health, connection = launched.connection] in
      guard let misses = await Self.watchHealth(connection, policy: health) else { return }
      await self?.healthFailed(generation: generation, misses: misses)
    }
    if !wantsRunning {
      // A stop arrived while we were starting.
      await stopProcess()
    }
  }

  private func setStatus(_ new: PluginStatus) {
    status = new
    switch new {
    case .starting, .backoff:
      if readiness == nil { readiness = OneShot() }
    case .ready, .running:
      readiness?.deliver(true)
      readiness = nil
    default:
      readiness?.deliver(false)
      readiness = nil
    }
  }

  private func fail(_ message: String) {
    setStatus(.error)
    lastError = message
    logger.error("plugin failed", metadata: ["plugin_id": "\(id)", "error": "\(message)"])
  }

  /// An exit nobody asked for.
  private func processExited(generation: Int, status exit: ExitStatus) {
    // A requested stop handles its own exit (and the reaper's record of it).
    guard !stopping, let running = current, running.generation == generation else { return }
    ProcessReaper.shared.forget(pid: running.pid)
    running.connection.close()
    kill(-running.pid, SIGKILL)  // leftovers of its process group
    current = nil
    healthTask?.cancel()
    healthTask = nil
    removeSocketDirectory()
    lastExit = LastExit(reason: exit)
    if let killReason {
      lastExit?.reason = killReason
      self.killReason = nil
    }
    ended(
      reason: lastExit!.reason, code: exit.code, uptime: running.startedAtMonotonic.duration(to: .now),
      message: lastExit!.reason == .healthFailed
        ? "the plugin failed \(manifest.health.failures) health checks in a row and was killed"
        : "the plugin \(exit) unexpectedly")
  }

  /// The process is gone without a stop request: the restart policy decides what is next.
  private func ended(reason: LastExit.Reason, code: Int?, uptime: Duration?, message: String) {
    let decision = planner.processEnded(reason: reason, code: code, uptime: uptime, now: .now, jitter: .random(in: -1...1))
    switch decision {
    case .restart(let delay):
      setStatus(.backoff)
      lastError = message
      nextRestartAt = Date().addingTimeInterval(delay.seconds)
      logger.warning("plugin will be restarted", metadata: ["plugin_id": "\(id)", "error": "\(message)", "delay_ms": "\(Int(delay.seconds * 1000))"])
      scheduleRestart(after: delay)
    case .stop:
      setStatus(.stopped)
      wantsRunning = false
      lastError = nil
      logger.info("plugin exited cleanly; its restart policy does not restart it", metadata: ["plugin_id": "\(id)"])
    case .giveUp(let why):
      fail("\(message); \(why)")
    }
  }

  /// Checks health every `interval_ms`; returns the number of misses once `failures` checks
  /// in a row went unanswered or unhealthy, or nil when cancelled.
  private static func watchHealth(_ connection: any PluginConnection, policy: PluginManifest.HealthPolicy) async -> Int? {
    var misses = 0
    while !Task.isCancelled {
      try? await Task.sleep(for: .milliseconds(policy.intervalMs))
      if Task.isCancelled { return nil }
      let healthy = await connection.healthCheck(timeout: .milliseconds(policy.timeoutMs))
      misses = healthy ? 0 : misses + 1
      if misses >= policy.failures { return misses }
    }
    return nil
  }

  /// A plugin that stopped answering is killed and handled as a crash (`health-failed`).
  private func healthFailed(generation: Int, misses: Int) {
    guard !stopping, let running = current, running.generation == generation else { return }
    logger.error("plugin failed its health checks; killing it", metadata: ["plugin_id": "\(id)", "misses": "\(misses)"])
    killReason = .healthFailed
    kill(-running.pid, SIGKILL)
  }

  private func scheduleRestart(after delay: Duration) {
    restartTimer?.cancel()
    restartTimer = Task { [weak self] in
      try? await Task.sleep(for: delay)
      guard !Task.isCancelled else { return }
      await self?.restartTimerFired()
    }
  }

  private func restartTimerFired() async {
    restartTimer = nil
    guard wantsRunning, status == .backoff, current == nil, starting == nil else { return }
    nextRestartAt = nil
    restarts += 1
    metrics.restarted(pluginID: id)
    await runLaunch()
  }

  private func cancelRestartTimer() {
    restartTimer?.cancel()
    restartTimer = nil
    nextRestartAt = nil
  }

  /// An operator's restart: stop the process if there is one, then start afresh (leaves
  /// `error` and `backoff` with a fresh restart budget, like `start`).
  func restart() async -> PluginInfo {
    wantsRunning = true
    cancelRestartTimer()
    if let starting { await starting.value }
    if current != nil {
      await stopProcess()
      restarts += 1
      metrics.restarted(pluginID: id)
    }
    return await start()
  }

  /// Builds the binary now; a running plugin is restarted on the new one. A failed build
  /// leaves a running plugin serving on its old binary.
  func build() async throws -> PluginInfo {
    do {
      _ = try await builder.build(id: id, manifest: manifest, directory: directory)
    } catch {
      lastError = "\(error)"
      throw ControlError(.pluginError, "\(error)", details: ["build_log_tail": .array(((error as? BuildFailure)?.logTail ?? []).map(JSONValue.string))])
    }
    lastError = nil
    return current != nil ? await restart() : info
  }

  // MARK: stop

  /// go-plugin's stop sequence: Shutdown RPC, wait, SIGTERM to the group, 1 s, SIGKILL.
  func stop() async -> PluginInfo {
    wantsRunning = false
    cancelRestartTimer()
    if let starting { await starting.value }
    if current != nil {
      await stopProcess()
      setStatus(.stopped)
    } else if status != .error {
      setStatus(.stopped)
    }
    return info
  }

  private func stopProcess() async {
    guard let running = current, !stopping else { return }
    stopping = true
    healthTask?.cancel()
    healthTask = nil
    defer { stopping = false }
    let grace = Duration.milliseconds(manifest.stopTimeoutMs)
    await running.connection.shutdown(timeout: grace)
    var exit = await Self.waitForExit(running.pid, within: grace)
    if exit == nil {
      kill(-running.pid, SIGTERM)
      exit = await Self.waitForExit(running.pid, within: .seconds(1))
    }
    if exit == nil {
      kill(-running.pid, SIGKILL)
      exit = await ProcessReaper.shared.waitForExit(pid: running.pid)
    }
    kill(-running.pid, SIGKILL)  // any child the plugin left in its group
    ProcessReaper.shared.forget(pid: running.pid)
    running.connection.close()
    current = nil
    removeSocketDirectory()
    lastExit = LastExit(reason: .stopped, code: exit.flatMap(\.code), signal: exit.flatMap(\.signal), at: ISO8601.now())
    setStatus(.stopped)
    logger.info("plugin stopped", metadata: ["plugin_id": "\(id)"])
  }

  private static func waitForExit(_ pid: pid_t, within timeout: Duration) async -> ExitStatus? {
    await ProcessReaper.shared.waitForExit(pid: pid, within: timeout)
  }

  // MARK: execute

  func execute(method: String, args: [String: JSONValue], timeoutMs: Int?) async throws -> [String: JSONValue] {
    let timeout = Duration.milliseconds(min(timeoutMs ?? manifest.execTimeoutMs, manifest.execTimeoutMs))
    let deadline = ContinuousClock.now + timeout
    var resent = false
    while true {
      let running = try await readyProcess(before: deadline, timeout: timeout)
      do {
        return try await send(method: method, args: args, to: running, before: deadline, timeout: timeout)
      } catch let undelivered as UndeliveredCall {
        // The plugin never saw this call (its connection was down): send it once more, to
        // the process that replaces this one. A delivered call is never resent.
        guard !resent else { throw undelivered.error }
        resent = true
        logger.info("call not delivered; resending it after the plugin restarts", metadata: ["plugin_id": "\(id)", "method": "\(method)"])
        try await awaitReplacement(of: running, before: deadline, cause: undelivered.error)
      }
    }
  }

  /// The running process to send a call to, waiting within the deadline for a plugin that is
  /// (re)starting; fails at once when it is stopped, in error or at its concurrency cap.
  private func readyProcess(before deadline: ContinuousClock.Instant, timeout: Duration) async throws -> Running {
    if let readiness, status == .starting || status == .backoff, await readiness.wait(until: deadline) == nil {
      throw ControlError(.timeout, "plugin \(id) did not become ready within \(timeout.readable); it is \(status.rawValue)" + lastErrorSuffix)
    }
    guard let running = current, status == .ready || status == .running else {
      throw ControlError(.unavailable, "plugin \(id) is \(status.rawValue), not running; start it with `jankctl start \(id)`" + lastErrorSuffix)
    }
    guard inFlight < manifest.maxConcurrency else {
      throw ControlError(.busy, "plugin \(id) already has \(inFlight) calls in flight (max_concurrency \(manifest.maxConcurrency)); retry shortly")
    }
    guard ContinuousClock.now < deadline else {
      throw ControlError(.timeout, "plugin \(id) became ready too late for this call's deadline (\(timeout.readable)); retry")
    }
    return running
  }

  private var lastErrorSuffix: String { lastError.map { " (last error: \($0))" } ?? "" }

  private func send(method: String, args: [String: JSONValue], to running: Running, before deadline: ContinuousClock.Instant, timeout: Duration) async throws -> [String: JSONValue] {
    inFlight += 1
    status = .running
    defer {
      inFlight -= 1
      if inFlight == 0, status == .running { status = .ready }
    }
    do {
      return try await running.connection.execute(method: method, args: args, timeout: ContinuousClock.now.duration(to: deadline))
    } catch let error as ControlError where error.kind == .timeout {
      // Say the call's whole budget, not what was left of it after waiting for readiness.
      throw ControlError(.timeout, "plugin \(id) did not answer \(method) within \(timeout.readable); raise timeout_ms (at most exec_timeout_ms \(manifest.execTimeoutMs)) or make the method faster")
    } catch let error as ControlError where error.kind == .unavailable {
      // Name the crash when the process died under the call (exactly the calls in flight fail).
      _ = await ProcessReaper.shared.waitForExit(pid: running.pid, within: .milliseconds(500))
      guard current?.generation != running.generation, let exit = lastExit else { throw error }
      let how = exit.signal.map { "killed by signal \($0)" } ?? exit.code.map { "exited with code \($0)" } ?? exit.reason.rawValue
      throw ControlError(
        .unavailable, "plugin \(id) crashed during the call (\(how)); the call was not retried, it is restarted per its restart policy",
        details: ["last_exit": .string(exit.reason.rawValue)])
    }
  }

  /// Waits until the process that refused a call is gone and handled (its exit starts the
  /// restart policy), so the next attempt waits for its replacement.
  private func awaitReplacement(of running: Running, before deadline: ContinuousClock.Instant, cause: ControlError) async throws {
    guard current?.generation == running.generation else { return }
    guard let exit = await ProcessReaper.shared.waitForExit(pid: running.pid, within: ContinuousClock.now.duration(to: deadline)) else {
      throw ControlError(.timeout, "plugin \(id) refused the call (\(cause.message)) and was not replaced within the call's deadline")
    }
    // The reaper's own task may not have reported this exit to the actor yet.
    processExited(generation: running.generation, status: exit)
  }

  // MARK: socket directory

  private func prepareSocketDirectory() throws {
    removeSocketDirectory()
    try FileManager.default.createDirectory(atPath: socketDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
  }

  private func removeSocketDirectory() {
    try? FileManager.default.removeItem(atPath: socketDirectory)
  }
}
