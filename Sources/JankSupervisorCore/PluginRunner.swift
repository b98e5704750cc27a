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
  let socketDirectory: String
  /// The uid it runs as, or nil (then `isolationNote` says why).
  let identity: PluginIdentity?
  let isolationNote: String?
  let launcher: any PluginLaunching
  let builder: Builder
  private let metrics: SupervisorMetrics
  /// Told after every status change (systemd's STATUS= line follows them).
  private let onStatusChange: @Sendable () -> Void
  let logger: Logger

  var status: PluginStatus = .stopped
  var wantsRunning = false
  var current: Running?
  /// The launch in progress (build, spawn, handshake); a stop or restart cancels it.
  var starting: Task<Void, Never>?
  var stopping = false
  /// The stop sequence under way, which a second stop waits for instead of returning early.
  var stopInProgress: Task<Void, Never>?
  /// Counts operator requests (start, stop, restart): one that awaited something checks it
  /// afterwards, so that a later request wins over an earlier one still finishing.
  var requests = 0
  /// Set by the supervisor's shutdown: the plugin is never started again.
  var retired = false
  private var generation = 0
  var inFlight = 0
  /// Calls in flight per process, so a hot swap can let the old process finish its own.
  var inFlightByGeneration: [Int: Int] = [:]
  /// Hot swaps waiting for one process's calls to finish, by generation.
  var drained: [Int: OneShot<Void>] = [:]
  /// The last requested build (and swap); the next one waits for it.
  var buildChain: Task<Void, Never>?
  private var restarts = 0
  private var planner: RestartPlanner
  private var nextRestartAt: Date?
  private var restartTimer: Task<Void, Never>?
  var healthWatch: HealthWatch?
  /// Why the supervisor itself killed the current process (health checks), if it did.
  private var killReason: LastExit.Reason?
  /// Delivered `true` when a starting or restarting plugin becomes ready, `false` when it
  /// ends in error or stopped; calls that arrive meanwhile wait on it.
  var readiness: OneShot<Bool>?
  var lastExit: LastExit?
  var lastError: String?
  /// Test hook: runs after a call's wait for readiness ended, with the ready process's pid
  /// (a test kills it there to crash the plugin between ready and the call's send).
  var afterReadinessWait: (@Sendable (pid_t?) async -> Void)?

  func setAfterReadinessWait(_ hook: (@Sendable (pid_t?) async -> Void)?) {
    afterReadinessWait = hook
  }

  struct Running {
    var generation: Int
    var pid: pid_t
    var connection: any PluginConnection
    /// The Unix socket file the process listens on, removed when it ends.
    var socketPath: String?
    var cgroup: PluginCgroup?
    var limitsNote: String?
    var startedAt: Date
    var startedAtMonotonic: ContinuousClock.Instant

    init(_ launched: LaunchedPlugin, generation: Int) {
      self.generation = generation
      pid = launched.pid
      connection = launched.connection
      socketPath = launched.handshake.network == "unix" ? launched.handshake.address : nil
      cgroup = launched.cgroup
      limitsNote = launched.limitsNote
      startedAt = Date()
      startedAtMonotonic = .now
    }
  }

  init(
    manifest: PluginManifest, directory: String, socketDirectory: String, identity: PluginIdentity? = nil, isolationNote: String? = nil,
    launcher: any PluginLaunching, builder: Builder, metrics: SupervisorMetrics, logger: Logger,
    onStatusChange: @escaping @Sendable () -> Void = {}
  ) {
    self.id = manifest.id
    self.identity = identity
    self.isolationNote = identity == nil ? isolationNote : nil
    self.manifest = manifest
    self.directory = directory
    self.socketDirectory = socketDirectory
    self.launcher = launcher
    self.builder = builder
    self.metrics = metrics
    self.onStatusChange = onStatusChange
    self.logger = logger
    self.log = PluginLog(pluginID: manifest.id, logger: logger)
    self.planner = RestartPlanner(policy: manifest.restart)
  }

  var info: PluginInfo { info(withUsage: true) }

  /// `usage` reads two cgroup files; `list` over a thousand plugins leaves it out.
  func info(withUsage: Bool) -> PluginInfo {
    PluginInfo(
      id: id, name: manifest.name, version: manifest.version, type: manifest.type,
      description: manifest.description, author: manifest.author, directory: directory,
      binary: manifest.binary, status: status, desired: wantsRunning ? "running" : "stopped",
      autoStart: manifest.autoStart, pid: current.map { Int($0.pid) },
      startedAt: current.map { ISO8601.format($0.startedAt) },
      uptimeSeconds: current.map { ($0.startedAtMonotonic.duration(to: .now)).seconds },
      restarts: restarts, consecutiveFailures: planner.consecutiveFailures(upFor: current?.startedAtMonotonic.duration(to: .now)), inFlight: inFlight,
      lastExit: lastExit, lastError: lastError, nextRestartAt: nextRestartAt.map(ISO8601.format), transport: current?.connection.transportName,
      limits: manifest.limits.isEmpty ? nil : .object(manifest.limits),
      limitsEnforced: current.map { $0.cgroup.map { "cgroup-v\($0.version)" } ?? "rlimit-only" },
      limitsNote: current?.cgroup == nil ? current?.limitsNote : nil,
      usage: withUsage ? current?.cgroup.map { ResourceUsage(memoryBytes: $0.memoryBytes, pids: $0.pidsCurrent) } : nil,
      folderProblem: PluginFolderWalk.problem(in: directory),
      isolation: identity == nil ? "none" : "uid", isolationNote: isolationNote, uid: identity.map { Int($0.uid) })
  }

  // MARK: start

  /// Starts the plugin (building it first when its binary is missing) and returns once it
  /// is ready or has failed. Concurrent calls join the same start.
  func start() async -> PluginInfo {
    guard !retired else { return info }
    requests += 1
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

  /// `checkSources`: hash the sources to rebuild a changed plugin first. An operator's start
  /// does; a restart after a crash does not (source changes are rebuilt when they happen),
  /// so crash recovery never pays for reading every source file.
  private func runLaunch(checkSources: Bool = true) async {
    let task = Task { await self.launch(checkSources: checkSources) }
    starting = task
    await task.value
    if starting == task { starting = nil }
  }

  /// Cancels the launch in progress and waits for it to wind down, which is prompt: a
  /// half-started process is killed with its group, and so is a build (or it leaves the
  /// builder's queue).
  /// The caller decides the status that follows.
  func cancelLaunch() async {
    guard let task = starting else { return }
    task.cancel()
    await task.value
    if starting == task { starting = nil }
  }

  private func launch(checkSources: Bool) async {
    // `last_error` keeps the reason of the last failure until an operator starts the plugin.
    setStatus(.starting)
    // Built when missing, or when its sources changed since the last build.
    let (manifest, directory) = (manifest, directory)
    let stale = await BlockingIO.run {
      access(directory + "/" + manifest.binary, X_OK) != 0 || (checkSources && BuildFingerprint.needsBuild(manifest: manifest, directory: directory))
    }
    if stale {
      guard let built = await buildUnlessCancelled() else { return }
      if case .failure(let error) = built {
        fail("\(error)")
        return
      }
    }
    guard wantsRunning, !Task.isCancelled else { return }
    do {
      try prepareSocketDirectory()
    } catch {
      fail("cannot create the plugin's socket directory \(socketDirectory): \(error)")
      return
    }
    let launched: LaunchedPlugin
    do {
      launched = try await launcher.launch(manifest: manifest, directory: directory, socketDirectory: socketDirectory, identity: identity, log: log)
    } catch {
      removeSocketDirectory()
      lastExit = LastExit(reason: error.reason, exit: error.exit)
      // A stop or restart cancelled this start: not a failure, the restart policy stays out of it.
      guard error.reason != .stopped, !Task.isCancelled else { return }
      // A binary that is not the one plugin.json names stays unstarted until an operator acts:
      // restarting cannot make its digest right.
      if error.reason == .digestMismatch {
        fail("start failed: \(error.message)")
        return
      }
      ended(reason: error.reason, code: error.exit?.code, uptime: nil, message: "start failed: \(error.message)")
      return
    }
    install(launched)
    if !wantsRunning || Task.isCancelled {
      // The stop arrived just as the start finished.
      await stopProcess()
    }
  }

  /// The build, or nil when the launch is cancelled: the cancellation reaches the builder,
  /// which kills the build's process group (or gives up its place in the queue) at once.
  private func buildUnlessCancelled() async -> Result<Void, any Error>? {
    let result: Result<Void, any Error>
    do {
      _ = try await builder.build(id: id, manifest: manifest, directory: directory, uid: identity?.uid)
      result = .success(())
    } catch {
      result = .failure(error)
    }
    return Task.isCancelled ? nil : result
  }

  /// Makes a launched process the current one: new calls go to it, its exit and health
  /// are watched.
  func install(_ launched: LaunchedPlugin) {
    generation += 1
    let running = Running(launched, generation: generation)
    current = running
    cancelRestartTimer()
    setStatus(inFlight > 0 ? .running : .ready)
    logger.info("plugin ready", metadata: ["plugin_id": "\(id)", "pid": "\(launched.pid)"])
    let pid = launched.pid
    let generation = running.generation
    Task { [weak self] in
      let exit = await ProcessReaper.shared.waitForExit(pid: pid)
      await self?.processExited(generation: generation, status: exit)
    }
    healthWatch?.cancel()
    healthWatch = launched.connection.watchHealth(policy: manifest.health) { [weak self] misses in
      Task { await self?.healthFailed(generation: generation, misses: misses) }
    }
  }

  func setStatus(_ new: PluginStatus) {
    let changed = new != status
    defer { if changed { onStatusChange() } }
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
  func processExited(generation: Int, status exit: ExitStatus) {
    // A requested stop handles its own exit (and the reaper's record of it).
    guard !stopping, let running = current, running.generation == generation else { return }
    ProcessReaper.shared.forget(pid: running.pid)
    running.connection.close()
    kill(-running.pid, SIGKILL)  // leftovers of its process group
    current = nil
    healthWatch?.cancel()
    healthWatch = nil
    removeSocketDirectory()
    lastExit = LastExit(reason: exit)
    if let killReason {
      lastExit?.reason = killReason
      self.killReason = nil
    } else if exit == .signaled(SIGKILL), let cgroup = running.cgroup, cgroup.oomKills > 0 {
      lastExit?.reason = .oomKilled
    }
    running.cgroup?.remove()
    ended(
      reason: lastExit!.reason, code: exit.code, uptime: running.startedAtMonotonic.duration(to: .now),
      message: exitMessage(lastExit!.reason, exit))
  }

  private func exitMessage(_ reason: LastExit.Reason, _ exit: ExitStatus) -> String {
    switch reason {
    case .healthFailed: "the plugin failed \(manifest.health.failures) health checks in a row and was killed"
    case .oomKilled: "the plugin went past its memory_mb limit (\(manifest.resourceLimits.memoryMB ?? 0) MB) and the kernel's OOM killer killed it"
    case .cpuLimit: "the plugin used up its cpu_seconds limit (\(manifest.resourceLimits.cpuSeconds ?? 0) s of CPU) and was killed by SIGXCPU"
    default: "the plugin \(exit) unexpectedly"
    }
  }

  /// The process is gone without a stop request: the restart policy decides what is next.
  private func ended(reason: LastExit.Reason, code: Int?, uptime: Duration?, message: String) {
    let decision = planner.processEnded(reason: reason, code: code, uptime: uptime, now: .now, jitter: .random(in: -1...1))
    switch decision {
    case .restart(let delay):
      setStatus(.backoff)
      lastError = message
      nextRestartAt = Date().addingTimeInterval(delay.seconds)
      logger.warning(
        "plugin will be restarted",
        metadata: ["plugin_id": "\(id)", "reason": "\(reason.rawValue)", "error": "\(message)", "delay_ms": "\(Int(delay.seconds * 1000))"])
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
    await runLaunch(checkSources: false)
  }

  func cancelRestartTimer() {
    restartTimer?.cancel()
    restartTimer = nil
    nextRestartAt = nil
  }

  /// An operator's restart: stop the process if there is one (or cancel its start), then
  /// start afresh (leaves `error` and `backoff` with a fresh restart budget, like `start`).
  func restart() async -> PluginInfo {
    guard !retired else { return info }
    requests += 1
    let request = requests
    wantsRunning = true
    cancelRestartTimer()
    await cancelLaunch()
    if current != nil {
      await stopProcess()
      restarts += 1
      metrics.restarted(pluginID: id)
    }
    // A stop that arrived while this restart stopped the old process is the last word.
    guard requests == request else { return info }
    return await start()
  }

  // MARK: socket directory

  private func prepareSocketDirectory() throws {
    removeSocketDirectory()
    try FileManager.default.createDirectory(atPath: socketDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    guard let identity else { return }
    // The plugin's own, and the supervisor's group's: set-group-ID, so that the socket the
    // plugin makes (umask 007) is the group's too, and a supervisor that is not root can
    // connect. Nobody else gets in.
    guard chown(socketDirectory, identity.uid, getegid()) == 0, chmod(socketDirectory, 0o2770) == 0 else {
      throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EPERM)
    }
  }

  func removeSocketDirectory() {
    try? FileManager.default.removeItem(atPath: socketDirectory)
  }
}
