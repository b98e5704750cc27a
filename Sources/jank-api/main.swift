import ArgumentParser
import Foundation
import Hummingbird
import JankHTTP
import Logging

/// The HTTP API: a stateless translator from HTTP to the supervisor's control channel.
@main
struct JankAPI: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "jank-api",
    abstract: "Serve Jank's HTTP API (/api/plugin/...) in front of a running jank-supervisor.")

  @Option(help: "Address to listen on, HOST:PORT (env JANK_API_LISTEN; default 127.0.0.1:8080).")
  var listen: String?

  @Option(help: "The supervisor's control socket (env JANK_SOCKET; default <state dir>/supervisor.sock).")
  var socket: String?

  @Option(help: "File holding the bearer token (env JANK_API_TOKEN_FILE; or the token itself in JANK_API_TOKEN).")
  var tokenFile: String?

  @Option(help: "Largest request body in bytes (env JANK_API_BODY_LIMIT; default 1048576).")
  var bodyLimit: Int?

  @Option(help: "trace, debug, info, notice, warning, error or critical (env JANK_LOG_LEVEL).")
  var logLevel: String?

  func run() async throws {
    let env = ProcessInfo.processInfo.environment
    var logger = Logger(label: "jank-api")
    logger.logLevel = Logger.Level(rawValue: logLevel ?? env["JANK_LOG_LEVEL"] ?? "info") ?? .info

    let state = env["JANK_STATE_DIR"] ?? FileManager.default.currentDirectoryPath + "/.jank"
    var configuration = APIConfiguration(socketPath: socket ?? env["JANK_SOCKET"] ?? state + "/supervisor.sock")
    do {
      try configuration.setListen(listen ?? env["JANK_API_LISTEN"] ?? "127.0.0.1:8080")
      configuration.token = try Self.token(file: tokenFile ?? env["JANK_API_TOKEN_FILE"], value: env["JANK_API_TOKEN"])
      if let limit = bodyLimit ?? env["JANK_API_BODY_LIMIT"].flatMap({ Int($0) }) { configuration.bodyLimit = limit }
      try configuration.validate()
    } catch {
      FileHandle.standardError.write(Data("jank-api: \(error)\n".utf8))
      throw ExitCode(2)
    }

    let app = makeAPIApplication(configuration: configuration, logger: logger) { [logger, configuration] port in
      logger.info(
        "jank-api listening on http://\(configuration.host):\(port)",
        metadata: ["supervisor_socket": "\(configuration.socketPath)", "auth": "\(configuration.token == nil ? "none" : "bearer")"])
    }
    try await app.runService()
  }

  /// The token from a file (trimmed) or the variable; a named but unreadable file is an error.
  static func token(file: String?, value: String?) throws -> String? {
    if let file {
      guard let contents = try? String(contentsOfFile: file, encoding: .utf8) else {
        throw ValidationError("cannot read the token file \(file)")
      }
      let token = contents.trimmingCharacters(in: .whitespacesAndNewlines)
      guard !token.isEmpty else { throw ValidationError("the token file \(file) is empty") }
      return token
    }
    if let value, !value.isEmpty { return value }
    return nil
  }
}
