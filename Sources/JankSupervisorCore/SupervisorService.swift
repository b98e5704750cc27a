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
    await withTaskGroup(of: Void.self) { group in
      group.addTask { await server.run() }
      await supervisor.restoreRegistrations()
      await supervisor.startAutoStartPlugins()
      await onReady(server)
      try? await gracefulShutdown()
      logger.info("shutting down: stopping plugins")
      await supervisor.stopAll()
      group.cancelAll()
    }
  }
}
