import ArgumentParser
import Foundation
import JankSupervisorCore
import Logging
import ServiceLifecycle

/// The daemon that owns every plugin process. All behaviour lives in JankSupervisorCore.
@main
struct JankSupervisorCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "jank-supervisor",
    abstract: "Runs Jank plugins, each in its own process, and serves the control socket.",
    version: Supervisor.version)

  @Option(name: .long, help: "Folder with one sub-folder per plugin (env JANK_PLUGINS_DIR).")
  var pluginsDir: String?

  @Option(name: .long, help: "Where state, build logs and plugin sockets live (env JANK_STATE_DIR).")
  var stateDir: String?

  @Option(name: .long, help: "Control socket path (env JANK_SOCKET; default <state-dir>/supervisor.sock).")
  var socket: String?

  @Option(name: .long, help: "Where cgroup filesystems are mounted (env JANK_CGROUP_ROOT; default /sys/fs/cgroup). A missing path means rlimits only.")
  var cgroupRoot: String?

  @Option(name: .long, help: "How many plugin builds may run at once (env JANK_MAX_PARALLEL_BUILDS; default 1).")
  var maxParallelBuilds: Int?

  @Option(
    name: .long,
    help: "The uids plugins run as, one each, when the supervisor may change uid: LOW-HIGH, or off (env JANK_PLUGIN_UID_RANGE; default 61184-65519).")
  var pluginUidRange: String?

  @Option(
    name: .long,
    help: "A plugin id whose builds run in its folder as the supervisor's user, though the plugin has a uid of its own; repeat for more (env JANK_BUILD_IN_PLACE, comma-separated). Only for builds you trust that need more than their folder.")
  var buildInPlace: [String] = []

  @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error (env JANK_LOG_LEVEL).")
  var logLevel: String?

  func run() async throws {
    let env = ProcessInfo.processInfo.environment
    let cwd = FileManager.default.currentDirectoryPath
    func absolute(_ path: String) -> String { path.hasPrefix("/") ? path : cwd + "/" + path }

    let pluginsDirectory = absolute(pluginsDir ?? env["JANK_PLUGINS_DIR"] ?? "plugins")
    let stateDirectory = absolute(stateDir ?? env["JANK_STATE_DIR"] ?? env["STATE_DIRECTORY"] ?? ".jank")
    let defaultSocket = env["RUNTIME_DIRECTORY"].map { $0 + "/supervisor.sock" } ?? stateDirectory + "/supervisor.sock"
    let socketPath = absolute(socket ?? env["JANK_SOCKET"] ?? defaultSocket)

    // A setting that does not parse stops the start with a sentence, never a silent default.
    let levelName = logLevel ?? env["JANK_LOG_LEVEL"] ?? "info"
    guard let level = Logger.Level(rawValue: levelName) else {
      throw ValidationError("log level '\(levelName)' (--log-level or JANK_LOG_LEVEL) is not one of trace, debug, info, notice, warning, error, critical")
    }
    var parallelBuilds = 1
    if let maxParallelBuilds {
      parallelBuilds = maxParallelBuilds
    } else if let text = env["JANK_MAX_PARALLEL_BUILDS"] {
      guard let value = Int(text) else {
        throw ValidationError("JANK_MAX_PARALLEL_BUILDS='\(text)' is not a whole number; set it to how many plugin builds may run at once (e.g. 1)")
      }
      parallelBuilds = value
    }
    guard parallelBuilds >= 1 else {
      throw ValidationError("at least one build must be allowed at a time (--max-parallel-builds or JANK_MAX_PARALLEL_BUILDS is \(parallelBuilds))")
    }
    let uidRangeText = pluginUidRange ?? env["JANK_PLUGIN_UID_RANGE"] ?? "\(IsolationMode.defaultRange.lowerBound)-\(IsolationMode.defaultRange.upperBound)"
    guard let uidRange = IsolationMode.parseRange(uidRangeText) else {
      throw ValidationError("plugin uid range '\(uidRangeText)' (--plugin-uid-range or JANK_PLUGIN_UID_RANGE) is not LOW-HIGH with 1000 <= LOW <= HIGH (e.g. 61184-65519), or off")
    }
    LoggingSystem.bootstrap { label in
      var handler = StreamLogHandler.standardError(label: label)
      handler.logLevel = level
      return handler
    }
    let logger = Logger(label: "jank-supervisor")

    var configuration = SupervisorConfiguration(pluginsDirectory: pluginsDirectory, stateDirectory: stateDirectory, socketPath: socketPath)
    configuration.cgroupRoot = cgroupRoot ?? env["JANK_CGROUP_ROOT"] ?? configuration.cgroupRoot
    configuration.maxParallelBuilds = parallelBuilds
    configuration.pluginUIDRange = uidRange
    let inPlace = buildInPlace.isEmpty ? (env["JANK_BUILD_IN_PLACE"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } : buildInPlace
    for id in inPlace where !PluginManifest.isValidID(id) {
      throw ValidationError("--build-in-place '\(id)' (or JANK_BUILD_IN_PLACE) is not a plugin id such as dev.example.greeter")
    }
    configuration.buildsInPlace = Set(inPlace)
    // Thousands of control connections and plugins' pipes; children get the old limit back.
    OpenFilesLimit.raiseToHardLimit()
    let supervisor = Supervisor(configuration: configuration, logger: logger)
    let service = SupervisorService(supervisor: supervisor, logger: logger) { _ in
      let status = await supervisor.status()
      logger.notice(
        "jank-supervisor ready",
        metadata: ["socket": "\(socketPath)", "plugins": "\(pluginsDirectory)", "registered": "\(status.registered)"])
    }
    // Test hook: SIGUSR1 stalls the engine for 2 s, to prove the watchdog then goes quiet.
    var stallSource: (any DispatchSourceSignal)?
    if env["JANK_TEST_STALL_ON_SIGUSR1"] == "1" {
      signal(SIGUSR1, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: SIGUSR1)
      source.setEventHandler {
        logger.warning("SIGUSR1: stalling the engine for 2 s (JANK_TEST_STALL_ON_SIGUSR1)")
        Task { await supervisor.stallForTesting(.seconds(2)) }
      }
      source.resume()
      stallSource = source
    }
    defer { stallSource?.cancel() }
    let group = ServiceGroup(
      configuration: .init(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
  }
}
