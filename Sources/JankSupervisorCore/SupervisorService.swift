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

  /// STATUS= on every change of a plugin's status, and WATCHDOG=1 every half
  /// `WatchdogSec=`, each only after the supervisor actor answered a ping: a stalled engine
  /// stops the pings and systemd restarts it.
  private static func keepSystemdInformed(_ supervisor: Supervisor, _ systemd: SystemdNotifier) async {
    guard systemd.isEnabled else { return }
    await withTaskGroup(of: Void.self) { group in
      group.addTask {
        var last = ""
        for await _ in supervisor.statusChanges {
          let line = await supervisor.statusLine()
          if line != last { systemd.status(line) }
          last = line
        }
      }
      if let interval = systemd.watchdogInterval {
        group.addTask {
          while !Task.isCancelled {
            await supervisor.ping()
            systemd.watchdog()
            try? await Task.sleep(for: interval)
          }
        }
      }
    }
  }
}
