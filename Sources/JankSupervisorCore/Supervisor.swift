import Foundation
import Glibc
public import JankControl
public import JankJSON
public import Logging
public import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Where the supervisor finds plugins and keeps its state.
public struct SupervisorConfiguration: Sendable {
  public var pluginsDirectory: String
  public var stateDirectory: String
  public var socketPath: String
  public var buildTimeout: Duration = .seconds(900)
  /// How many plugin builds may run at once.
  public var maxParallelBuilds = 1
  /// Where cgroup filesystems are mounted; a missing path means no cgroups (rlimits only).
  public var cgroupRoot = "/sys/fs/cgroup"
  /// The uids plugins run as, one each, when the supervisor may change uid (nil: never).
  public var pluginUIDRange: ClosedRange<UInt32>? = IsolationMode.defaultRange
  /// Plugins whose builds run in their folder as the supervisor's user even when the plugin
  /// has a uid of its own (`--build-in-place`): the operator's explicit trust, for a build
  /// that needs more than its folder.
  public var buildsInPlace: Set<String> = []
  /// The event loops that carry jank-frame connections to plugins. A caller that runs on one
  /// of them (task executor preference) sends and receives without a thread hop.
  public var eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton

  public init(pluginsDirectory: String, stateDirectory: String, socketPath: String) {
    self.pluginsDirectory = pluginsDirectory
    self.stateDirectory = stateDirectory
    self.socketPath = socketPath
  }
}

/// The engine: the registry of plugins and the operations of the control channel. It only
/// routes; each plugin's work happens in its own `PluginRunner`, so a slow start, stop or
/// call of one plugin never holds up another.
public actor Supervisor {
  public static let version = "0.1.0"

  public let configuration: SupervisorConfiguration
  private let logger: Logger
  private let builder: Builder
  private let store: StateStore
  private let metrics = SupervisorMetrics()
  /// Ticks when any plugin's status changes (at most one pending tick).
  public nonisolated let statusChanges: AsyncStream<Void>
  private let statusChanged: AsyncStream<Void>.Continuation
  private let launcher: any PluginLaunching
  /// Where each plugin's cgroup goes, found once at start.
  public let cgroups: CgroupHierarchy
  /// Whether each plugin gets a uid of its own (found once at start), and which.
  let principals: PluginPrincipals
  public var isolation: IsolationMode { principals.mode }
  private var runners: [String: PluginRunner] = [:] {
    didSet { runnerIndex.withLock { $0 = runners } }
  }
  /// `runners` for the execute path, which needs nothing else of the supervisor's state and
  /// so does not queue behind the supervisor actor (a copy-on-write share, not a copy).
  private nonisolated let runnerIndex = Mutex<[String: PluginRunner]>([:])
  /// The operator's intent per registered plugin (what `plugin.start` / `plugin.stop` said).
  private var desiredRunning: [String: Bool] = [:]
  private var socketDirectories: SocketDirectories
  private let scanner: PluginScanner
  /// Rebuilds and hot-swaps plugins whose sources change; made on the first buildable
  /// registration.
  private var sourceWatcher: SourceWatcher?
  private var sourceChangeTask: Task<Void, Never>?
  private let startedAt = ContinuousClock.now
  /// Stops every plugin once; set by the first shutdown request (SIGTERM/SIGINT or
  /// `stopAll`), after which nothing new is registered or started.
  private var shutdown: Task<Void, Never>?

  public init(configuration: SupervisorConfiguration, logger: Logger) {
    self.configuration = configuration
    self.scanner = PluginScanner(pluginsDirectory: configuration.pluginsDirectory)
    self.logger = logger
    self.store = StateStore(stateDirectory: configuration.stateDirectory, logger: logger)
    (statusChanges, statusChanged) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    self.builder = Builder(logDirectory: configuration.stateDirectory + "/builds", timeout: configuration.buildTimeout, maxParallel: configuration.maxParallelBuilds, inPlace: configuration.buildsInPlace, logger: logger)
    let instance = String(UInt32.random(in: .min ... .max), radix: 16)
    self.cgroups = CgroupHierarchy.detect(root: configuration.cgroupRoot, instance: instance)
    self.launcher = PluginLauncher(cgroups: cgroups, eventLoopGroup: configuration.eventLoopGroup)
    principals = PluginPrincipals(mode: IsolationMode.detect(range: configuration.pluginUIDRange))
    socketDirectories = SocketDirectories(stateDirectory: configuration.stateDirectory, traversable: principals.mode.name == "uid")
    switch principals.mode {
    case .uid(let range):
      logger.info("each plugin runs as a uid of its own", metadata: ["range": "\(range.lowerBound)-\(range.upperBound)"])
    case .none(let reason):
      logger.warning("plugins run as the supervisor's user", metadata: ["reason": "\(reason)"])
    }
    switch cgroups {
    case .unavailable(let reason):
      logger.warning("plugins run with rlimits only (no cgroups)", metadata: ["reason": "\(reason)"])
    default:
      logger.info("plugins get one cgroup each", metadata: ["hierarchy": "\(cgroups.name)"])
    }
  }

  // MARK: discovery

  /// A scan of the plugins folder, made off the actor (it reads and hashes sources).
  public nonisolated func discover() async -> [DiscoveredPlugin] {
    await scanner.scan()
  }

  /// Restores the registrations saved by an earlier run and starts those the operator
  /// wanted running, all at once. Call before `startAutoStartPlugins`, so that a plugin an
  /// operator stopped stays stopped even when it is `auto_start`.
  public func restoreRegistrations() async {
    let saved = store.load()
    let found = await discover()
    var toStart: [PluginRunner] = []
    for entry in saved where runners[entry.id] == nil {
      guard let plugin = found.first(where: { $0.manifest?.id == entry.id }), let manifest = plugin.manifest, plugin.status != .incomplete else {
        logger.error("a registered plugin is gone or invalid; dropping its registration", metadata: ["plugin_id": "\(entry.id)"])
        continue
      }
      let runner: PluginRunner
      do {
        runner = try makeRunner(manifest: manifest, directory: plugin.directory, recordedUID: entry.uid)
      } catch {
        logger.error("a registered plugin cannot be restored; dropping its registration", metadata: ["plugin_id": "\(entry.id)", "error": "\(error)"])
        continue
      }
      runners[entry.id] = runner
      await watchSources(of: runner)
      desiredRunning[entry.id] = entry.running
      if entry.running { toStart.append(runner) }
    }
    await persist()
    await cancellingStartsOnShutdown {
      await withTaskGroup(of: Void.self) { group in
        for runner in toStart { group.addTask { _ = await runner.start() } }
      }
    }
  }

  /// Registers and starts every valid `auto_start` plugin, all at once.
  public func startAutoStartPlugins() async {
    let candidates = await discover().filter { $0.manifest?.autoStart == true && $0.status != .incomplete }
    await cancellingStartsOnShutdown {
      await withTaskGroup(of: Void.self) { group in
        for plugin in candidates {
          guard let id = plugin.manifest?.id else { continue }
          group.addTask { _ = try? await self.register(id: id) }
        }
      }
    }
  }

  /// Runs the start-up starts so that a SIGTERM/SIGINT arriving meanwhile (a plugin may take
  /// start_timeout_ms to start, or a build minutes) begins the shutdown at once: the
  /// starts are cancelled instead of waited for.
  private func cancellingStartsOnShutdown(_ body: () async -> Void) async {
    await withGracefulShutdownHandler {
      await body()
    } onGracefulShutdown: {
      Task { await self.beginShutdown() }
    }
  }

  // MARK: control operations

  public func list(status: PluginStatus? = nil) async -> PluginList {
    // Registered plugins are described by their runners; only the other folders are read,
    // off the actor, while the runners answer.
    async let scanned = scanner.scan(skipping: Set(runners.values.map(\.directory)))
    var registered: [PluginInfo] = []
    registered.reserveCapacity(runners.count)
    for runner in runners.values { registered.append(await runner.info(withUsage: false)) }
    let unregistered = await scanned.filter { plugin in
      guard let id = plugin.manifest?.id else { return true }
      return runners[id] == nil
    }.map(\.info)
    registered.sort { $0.id < $1.id }
    return PluginList(
      registered: registered.filter { status == nil || $0.status == status },
      unregistered: unregistered.filter { status == nil || $0.status == status })
  }

  public func get(id: String) async throws -> PluginInfo {
    try await runner(id).info
  }

  public func register(id: String, rebuild: Bool = false) async throws -> PluginInfo {
    try Self.validate(id: id)
    try refuseWhenShuttingDown()
    if let existing = runners[id] {
      throw ControlError(.conflict, "plugin \(id) is already registered (status \(await existing.info.status.rawValue)); use start, stop or restart", details: ["id": .string(id)])
    }
    // A registration burst (a thousand plugins at start) shares one scan of the folder; a
    // plugin missing or unusable in it is looked for again in a fresh scan.
    var found = await scanner.recent()
    if found.first(where: { $0.manifest?.id == id && $0.status != .incomplete }) == nil {
      found = await scanner.fresh()
    }
    // The scan ran off the actor: another register of this id may have won meanwhile.
    if let existing = runners[id] {
      throw ControlError(.conflict, "plugin \(id) is already registered (status \(await existing.info.status.rawValue)); use start, stop or restart", details: ["id": .string(id)])
    }
    try refuseWhenShuttingDown()
    guard let plugin = found.first(where: { $0.manifest?.id == id }) else {
      let unreadable = found.filter { $0.manifest == nil }.map { ($0.directory as NSString).lastPathComponent }
      let hint = unreadable.isEmpty ? "" : " (folders with an unreadable plugin.json: \(unreadable.joined(separator: ", ")))"
      throw ControlError(.notFound, "no plugin with id \(id) under \(configuration.pluginsDirectory)\(hint); `jankctl list` shows what is there", details: ["id": .string(id)])
    }
    guard let manifest = plugin.manifest, plugin.status != .incomplete else {
      throw ControlError(.invalid, "plugin \(id) cannot be registered: \(plugin.problems.joined(separator: "; "))", details: ["id": .string(id), "problems": .array(plugin.problems.map(JSONValue.string))])
    }
    if rebuild {
      // Forget the build record so the start rebuilds; the binary stays until a new one
      // replaces it, and a plugin with no build is refused instead of losing its binary.
      guard BuildPlan.plan(for: manifest, directory: plugin.directory) != nil else {
        throw ControlError(.conflict, "plugin \(id) has no build (no \"build\" in plugin.json, no Package.swift, go.mod, main.go or Makefile), so it cannot be rebuilt; register it without rebuild", details: ["id": .string(id)])
      }
      try? FileManager.default.removeItem(atPath: BuildFingerprint.recordPath(manifest: manifest, directory: plugin.directory))
    }
    let runner = try makeRunner(manifest: manifest, directory: plugin.directory)
    runners[id] = runner
    // Watched before it starts: a change saved right after the registration is seen.
    await watchSources(of: runner)
    return try await record(id, running: true).start()
  }

  public func unregister(id: String) async throws -> UnregisterResult {
    let runner = try runner(id)
    runners[id] = nil
    desiredRunning[id] = nil
    sourceWatcher?.unwatch(id: id)
    await persist()
    _ = await runner.stop()
    if runners[id] == nil { principals.release(id: id) }
    return UnregisterResult(id: id)
  }

  public func start(id: String) async throws -> PluginInfo {
    try refuseWhenShuttingDown()
    return try await record(id, running: true).start()
  }

  public func stop(id: String) async throws -> PluginInfo {
    try await record(id, running: false).stop()
  }

  public func restart(id: String) async throws -> PluginInfo {
    try refuseWhenShuttingDown()
    return try await record(id, running: true).restart()
  }

  private func refuseWhenShuttingDown() throws {
    guard shutdown == nil else {
      throw ControlError(.unavailable, "the supervisor is shutting down and starts no plugin; retry once it is back")
    }
  }

  public func build(id: String) async throws -> PluginInfo {
    try await runner(id).build()
  }

  /// Saves what the operator wants for a registered plugin and returns its runner.
  private func record(_ id: String, running: Bool) async throws -> PluginRunner {
    let runner = try runner(id)
    desiredRunning[id] = running
    await persist()
    return runner
  }

  /// Not isolated: after finding the runner, the call and its metrics need nothing of the
  /// supervisor's state, so they do not queue behind (or come back to) the supervisor actor.
  public nonisolated func execute(id: String, method: String, args: [String: JSONValue], timeoutMs: Int?) async throws -> ExecuteResult {
    guard !method.isEmpty else { throw ControlError(.invalid, "method must not be empty") }
    if let timeoutMs, timeoutMs <= 0 { throw ControlError(.invalid, "timeout_ms must be a positive number of milliseconds") }
    try Self.validate(id: id)
    guard let runner = runnerIndex.withLock({ $0[id] }) else { throw Self.notRegistered(id) }
    let begin = ContinuousClock.now
    do {
      let data = try await runner.execute(method: method, args: args, timeoutMs: timeoutMs)
      metrics.executed(pluginID: id, outcome: "ok", duration: begin.duration(to: .now))
      return ExecuteResult(method: method, data: data)
    } catch {
      metrics.executed(pluginID: id, outcome: (error as? ControlError)?.kind.rawValue ?? "internal", duration: begin.duration(to: .now))
      throw error
    }
  }

  public func logs(id: String, tail: Int) throws -> [String] {
    try runner(id).log.tail(tail)
  }

  /// `plugin.logs`: the last `tail` lines (default 100) of the plugin's output, or of its
  /// last build's log with `source: "build"`.
  public func logs(_ params: LogsParams) async throws -> LogsResult {
    if let tail = params.tail, !(1...PluginLog.capacity).contains(tail) {
      throw ControlError(.invalid, "tail must be between 1 and \(PluginLog.capacity) lines")
    }
    let runner = try runner(params.id)
    switch params.source ?? "plugin" {
    case "plugin":
      return LogsResult.newest(runner.log.tail(params.tail ?? 100), id: params.id)
    case "build":
      let lines = BuildLogFile.lastLines(ofFile: builder.logPath(id: params.id))
      return LogsResult.newest(Array(lines.suffix(params.tail ?? 100)), id: params.id)
    case let other:
      throw ControlError(.invalid, "source must be \"plugin\" or \"build\", not \"\(other.prefix(40))\"")
    }
  }

  public func metricsText() async -> String {
    var counts: [PluginStatus: Int] = [:]
    for runner in runners.values { counts[await runner.info.status, default: 0] += 1 }
    return metrics.render(statuses: counts, registered: runners.count)
  }

  public func status() async -> SupervisorStatus {
    var counts: [String: Int] = [:]
    for runner in runners.values { counts[await runner.info.status.rawValue, default: 0] += 1 }
    return SupervisorStatus(
      version: Self.version, pid: Int(getpid()), uptimeSeconds: startedAt.duration(to: .now).seconds,
      pluginsDirectory: configuration.pluginsDirectory, stateDirectory: configuration.stateDirectory,
      socket: configuration.socketPath, registered: runners.count, statuses: counts)
  }

  /// systemd's STATUS= line: "2 ready, 1 error, 0 backoff" (and starting or stopped ones
  /// when there are any).
  public func statusLine() async -> String {
    var counts: [PluginStatus: Int] = [:]
    for runner in runners.values { counts[await runner.info.status, default: 0] += 1 }
    var parts = [
      "\((counts[.ready] ?? 0) + (counts[.running] ?? 0)) ready", "\(counts[.error] ?? 0) error", "\(counts[.backoff] ?? 0) backoff",
    ]
    for extra in [PluginStatus.starting, .stopped] where (counts[extra] ?? 0) > 0 { parts.append("\(counts[extra]!) \(extra.rawValue)") }
    return parts.joined(separator: ", ")
  }

  /// Answers as soon as the actor runs: the watchdog only pings after this returns.
  public func ping() {}

  /// Stops every plugin in parallel (supervisor shutdown): each stop takes at most one stop
  /// sequence, and a plugin still starting has its start cancelled.
  public func stopAll() async {
    await beginShutdown()
    cgroups.removeInstanceDirectories()
    sourceWatcher?.close()
    sourceChangeTask?.cancel()
  }

  /// Starts stopping every plugin (once) and waits until they all are.
  private func beginShutdown() async {
    if shutdown == nil {
      let all = Array(runners.values)
      shutdown = Task {
        await withTaskGroup(of: Void.self) { group in
          for runner in all { group.addTask { _ = await runner.retire() } }
        }
      }
    }
    await shutdown?.value
  }

  // MARK: helpers

  /// A registered plugin's sources changed (debounced): rebuild and hot-swap it when it runs
  /// and its sources really hash differently; a stopped plugin is rebuilt at its next start.
  func sourcesChanged(id: String) async {
    guard let runner = runners[id] else { return }
    await sourceWatcher?.watch(id: id, directory: runner.directory)  // folders may have been added
    let (manifest, directory) = (runner.manifest, runner.directory)
    guard await BlockingIO.run({ BuildFingerprint.needsBuild(manifest: manifest, directory: directory) }) else { return }
    guard await runner.info.pid != nil else { return }
    logger.info("sources changed; rebuilding and swapping", metadata: ["plugin_id": "\(id)"])
    do {
      _ = try await runner.build()
    } catch {
      logger.error("rebuild after a source change failed; the old binary keeps serving", metadata: ["plugin_id": "\(id)", "error": "\(error)"])
    }
  }

  private func watchSources(of runner: PluginRunner) async {
    guard BuildPlan.plan(for: runner.manifest, directory: runner.directory) != nil else { return }
    if sourceWatcher == nil {
      let (changes, continuation) = AsyncStream.makeStream(of: String.self)
      sourceWatcher = SourceWatcher { continuation.yield($0) }
      sourceChangeTask = Task { [weak self] in
        for await id in changes { await self?.sourcesChanged(id: id) }
      }
    }
    await sourceWatcher?.watch(id: runner.id, directory: runner.directory)
  }

  private func makeRunner(manifest: PluginManifest, directory: String, recordedUID: UInt32? = nil) throws -> PluginRunner {
    let (identity, note) = try principals.principal(for: manifest.id, recorded: recordedUID)
    return PluginRunner(
      manifest: manifest, directory: directory, socketDirectory: socketDirectories.next(), identity: identity, isolationNote: note,
      launcher: launcher, builder: builder, metrics: metrics, logger: logger,
      onStatusChange: { [statusChanged] in statusChanged.yield() })
  }

  /// Saves registrations and the operator's intent. Supervisor shutdown does not call this,
  /// so plugins stopped by a shutdown start again with the next supervisor.
  private func persist() async {
    let entries = runners.map { id, runner in
      PersistedRegistration(id: id, directory: runner.directory, running: desiredRunning[id] ?? true, uid: runner.identity?.uid)
    }
    do {
      try await store.save(entries)
    } catch {
      logger.error("could not save the state file; registrations will not survive a restart", metadata: ["path": "\(store.path)", "error": "\(error)"])
    }
  }

  func runner(_ id: String) throws -> PluginRunner {
    try Self.validate(id: id)
    guard let runner = runners[id] else { throw Self.notRegistered(id) }
    return runner
  }

  private static func notRegistered(_ id: String) -> ControlError {
    ControlError(.notFound, "plugin \(id) is not registered; register it with `jankctl register \(id)` (see `jankctl list`)", details: ["id": .string(id)])
  }

  /// Ids are checked before any use, so `../../etc` never reaches a path.
  static func validate(id: String) throws {
    guard PluginManifest.isValidID(id) else {
      throw ControlError(.invalid, "'\(id.prefix(120))' is not a plugin id: ids are reverse-domain names like dev.jank.plugins.hello-world", details: ["id": .string(String(id.prefix(120)))])
    }
  }
}
