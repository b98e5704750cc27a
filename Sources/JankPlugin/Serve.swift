import CJankShim
import Dispatch
import GRPCCore
import GRPCNIOTransportHTTP2
import Glibc
import JankFrame
import JankProtocol
import Logging
import NIOCore

/// Runs `plugin` as a go-plugin plugin until the host stops it, then exits.
///
/// Checks the magic cookie, listens on a Unix socket and prints the handshake line on
/// stdout. A Jank host that offers `jank-frame` in `JANK_PLUGIN_PROTOCOLS` gets the framed
/// fast path (`1|1|unix|<path>|jank-frame|`); any other host, such as a go-plugin host, gets
/// gRPC (`1|1|unix|<path>|grpc|`) with the Jank service plus go-plugin's health, controller,
/// stdio and broker services. Exits 0 on `Shutdown`, SIGTERM or when the parent process
/// dies; exits 1 when not started by a plugin host.
public func serve<P: Plugin>(_ plugin: P, logLevel: Logger.Level = .info) async -> Never {
  let environment = PluginEnvironment.current()
  if let problem = environment.problem {
    StandardError.write(problem + "\n")
    exit(1)
  }
  signal(SIGINT, SIG_IGN)  // the host's terminal Ctrl-C is the host's business
  bootstrapLoggingOnce(level: logLevel)
  let logger = Logger(label: "plugin")

  let socketPath = environment.newSocketPath()
  guard socketPath.utf8.count <= 107 else {
    StandardError.write("jank plugin: socket path '\(socketPath)' is longer than 107 bytes; set PLUGIN_UNIX_SOCKET_DIR to a shorter directory\n")
    exit(1)
  }

  let shutdown = ShutdownSignal()
  let terminate = installTerminationHandler(shutdown: shutdown)
  let parentWatch = watchParent(shutdown: shutdown)
  if environment.offeredProtocols.contains(Frame.protocolName) {
    await serveFrames(plugin, socketPath: socketPath, shutdown: shutdown, logger: logger)
  } else {
    await serveGRPC(plugin, socketPath: socketPath, shutdown: shutdown, logger: logger)
  }
  withExtendedLifetime((terminate, parentWatch)) {}
  unlink(socketPath)
  exit(0)
}

/// In-flight calls get this long to finish after a shutdown; a stuck one must not keep the
/// process alive.
private let drainTimeout = Duration.seconds(3)

private func serveFrames(_ plugin: any Plugin, socketPath: String, shutdown: ShutdownSignal, logger: Logger) async {
  let server = FrameServer(plugin: plugin, shutdown: shutdown, logger: logger)
  let listener: FrameListener
  do {
    listener = try FrameListener.bind(path: socketPath)
  } catch {
    logger.error("plugin could not listen", metadata: ["socket": "\(socketPath)", "error": "\(error)"])
    return
  }
  writeHandshake("\(Handshake.coreProtocolVersion)|\(Handshake.appProtocolVersion)|unix|\(socketPath)|\(Frame.protocolName)|\n")
  logger.info("plugin serving", metadata: ["socket": "\(socketPath)", "pid": "\(getpid())", "protocol": "\(Frame.protocolName)"])
  let accepting = Task { await server.run(listener) }
  await shutdown.wait()
  listener.close()
  await server.inFlight.waitUntilDrained(within: drainTimeout)
  withExtendedLifetime(accepting) {}
}

private func serveGRPC<P: Plugin>(_ plugin: P, socketPath: String, shutdown: ShutdownSignal, logger: Logger) async {
  let transport = HTTP2ServerTransport.Posix(
    address: .unixDomainSocket(path: socketPath),
    transportSecurity: .plaintext,
    config: .defaults { $0.channelDebuggingCallbacks.onAcceptTCPConnection = HostCheck.admit }
  )
  let server = GRPCServer(
    transport: transport,
    services: [
      PluginServiceAdapter(plugin: plugin),
      HealthService(shutdown: shutdown),
      ControllerService(shutdown: shutdown),
      StdioService(shutdown: shutdown),
      BrokerService(shutdown: shutdown),
    ]
  )
  let handshake = Task {
    do {
      _ = try await transport.listeningAddress
    } catch {
      logger.error("plugin could not listen", metadata: ["socket": "\(socketPath)", "error": "\(error)"])
      shutdown.fire()
      return
    }
    writeHandshake("\(Handshake.coreProtocolVersion)|\(Handshake.appProtocolVersion)|unix|\(socketPath)|grpc|\n")
    logger.info("plugin serving", metadata: ["socket": "\(socketPath)", "pid": "\(getpid())", "protocol": "grpc"])
  }
  let drain = Task {
    await shutdown.wait()
    server.beginGracefulShutdown()
    try? await Task.sleep(for: drainTimeout)
    unlink(socketPath)
    exit(0)
  }
  do {
    try await server.serve()
  } catch {
    logger.error("plugin server failed", metadata: ["error": "\(error)"])
  }
  withExtendedLifetime((handshake, drain)) {}
}

/// What the host told the plugin through its environment.
struct PluginEnvironment {
  var cookie: String?
  var protocolVersions: String?
  /// `JANK_PLUGIN_PROTOCOLS`: what a Jank host offers beyond gRPC (design §3).
  var offeredProtocols: [String]
  var socketDirectory: String

  static func current() -> PluginEnvironment {
    func env(_ name: String) -> String? {
      guard let value = getenv(name) else { return nil }
      return String(cString: value)
    }
    let dir = env("PLUGIN_UNIX_SOCKET_DIR").flatMap { $0.isEmpty ? nil : $0 }
      ?? env("TMPDIR").flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
    return PluginEnvironment(
      cookie: env(Handshake.cookieKey),
      protocolVersions: env("PLUGIN_PROTOCOL_VERSIONS"),
      offeredProtocols: (env("JANK_PLUGIN_PROTOCOLS") ?? "").split(separator: ",").map { $0.trimmingCharacters() },
      socketDirectory: dir
    )
  }

  /// Why this process must not serve, or nil.
  var problem: String? {
    guard cookie == Handshake.cookieValue else {
      let seen = cookie.map { "is '\($0)'" } ?? "is not set"
      return """
        This binary is a Jank plugin: it is started by jank-supervisor (or another go-plugin host), \
        not run directly. The magic cookie \(Handshake.cookieKey) \(seen); a host sets it to \
        '\(Handshake.cookieValue)'. Register the plugin with `jankctl register <id>` instead.
        """
    }
    if let versions = protocolVersions, !versions.isEmpty {
      let offered = versions.split(separator: ",").map { $0.trimmingCharacters() }
      guard offered.contains(String(Handshake.appProtocolVersion)) else {
        return "jank plugin: the host offers protocol versions '\(versions)', this plugin speaks \(Handshake.appProtocolVersion); upgrade the host or the plugin"
      }
    }
    return nil
  }

  func newSocketPath() -> String {
    let dir = socketDirectory.hasSuffix("/") ? String(socketDirectory.dropLast()) : socketDirectory
    let suffix = String(UInt32.random(in: .min ... .max), radix: 16)
    return "\(dir)/plugin\(getpid())-\(suffix).sock"
  }
}

extension Substring {
  fileprivate func trimmingCharacters() -> String {
    String(self.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
  }
}

private func writeHandshake(_ line: String) {
  var line = line
  line.withUTF8 { buffer in
    var offset = 0
    while offset < buffer.count {
      let n = write(1, buffer.baseAddress! + offset, buffer.count - offset)
      if n < 0 {
        if errno == EINTR { continue }
        exit(1)  // the host is gone
      }
      offset += n
    }
  }
}

private nonisolated(unsafe) var loggingBootstrapped = false

private func bootstrapLoggingOnce(level: Logger.Level) {
  // `serve` runs once per process; LoggingSystem.bootstrap traps if called twice.
  guard !loggingBootstrapped else { return }
  loggingBootstrapped = true
  LoggingSystem.bootstrap { label in
    var handler = HCLogHandler(label: label)
    handler.logLevel = level
    return handler
  }
}

/// SIGTERM ends the plugin gracefully: the socket is removed and the process exits 0.
private func installTerminationHandler(shutdown: ShutdownSignal) -> any DispatchSourceSignal {
  signal(SIGTERM, SIG_IGN)
  let source = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
  source.setEventHandler { shutdown.fire() }
  source.resume()
  return source
}

/// A plugin must not outlive its host: watch for reparenting (and ask the kernel for
/// SIGTERM on parent death unless the host already chose a signal).
private func watchParent(shutdown: ShutdownSignal) -> any DispatchSourceTimer {
  let parent = getppid()
  if jank_get_parent_death_signal() == 0 {
    _ = jank_set_parent_death_signal(SIGTERM)
  }
  let timer = DispatchSource.makeTimerSource(queue: .global())
  timer.schedule(deadline: .now() + .seconds(1), repeating: .seconds(1))
  timer.setEventHandler {
    if getppid() != parent { shutdown.fire() }
  }
  timer.resume()
  return timer
}
