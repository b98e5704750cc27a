import Foundation
public import JankControl
public import Logging
public import ServiceLifecycle

/// Runs the supervisor under swift-service-lifecycle: binds the control socket, starts the
/// auto-start plugins, serves until SIGTERM/SIGINT, then stops every plugin.
public struct SupervisorService: Service {
  public let supervisor: Supervisor
  private let logger: Logger
  private let onReady: @Sendable (ControlServer) async -> Void

  public init(supervisor: Supervisor, logger: Logger, onReady: @escaping @Sendable (ControlServer) async -> Void = { _ in }) {
    self.supervisor = supervisor
    self.logger = logger
    self.onReady = onReady
  }

  public func run() async throws {
    let configuration = supervisor.configuration
    try FileManager.default.createDirectory(atPath: configuration.stateDirectory, withIntermediateDirectories: true)
    try FileManager.default.createDirectory(
      atPath: (configuration.socketPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    let server = try await ControlServer.bind(path: configuration.socketPath, router: supervisor.makeRouter(), logger: logger)
    logger.info("control socket listening", metadata: ["socket": "\(configuration.socketPath)"])
    let systemd = SystemdNotifier()
    await withTaskGroup(of: Void.self) { group in
      group.addTask { await server.run() }
      await supervisor.restoreRegistrations()
      await supervisor.startAutoStartPlugins()
      systemd.ready(status: await supervisor.statusLine())
      await onReady(server)
      group.addTask { await Self.keepSystemdInformed(supervisor, systemd) }
      try? await gracefulShutdown()
      logger.info("shutting down: stopping plugins")
      systemd.stopping()
      await supervisor.stopAll()
      group.cancelAll()
    }
  }

  /// STATUS= when the counts change, and WATCHDOG=1 every half `WatchdogSec=` — but only
  /// after the supervisor actor answered: a wedged supervisor stops pinging and systemd
  /// restarts it.
  private static func keepSystemdInformed(_ supervisor: Supervisor, _ systemd: SystemdNotifier) async {
    guard systemd.isEnabled else { return }
    let watchdog = systemd.watchdogInterval
    let tick = min(watchdog ?? .seconds(5), .seconds(5))
    var lastStatus = ""
    while !Task.isCancelled {
      let status = await supervisor.statusLine()
      if watchdog != nil { systemd.watchdog() }
      if status != lastStatus {
        systemd.status(status)
        lastStatus = status
      }
      try? await Task.sleep(for: tick)
    }
  }
}
