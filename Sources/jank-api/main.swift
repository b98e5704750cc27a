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

  @Option(help: "Largest request body: bytes, or with KiB, MiB or GiB, like 64MiB (env JANK_API_BODY_LIMIT; default 1MiB).")
  var bodyLimit: String?

  @Option(help: "Open connections at most; past it new ones wait (env JANK_API_MAX_CONNECTIONS; default 4096).")
  var maxConnections: String?

  @Option(help: "Seconds before a connection with no request in progress is closed (env JANK_API_IDLE_TIMEOUT; default 60).")
  var idleTimeout: String?

  @Option(help: "Seconds a request's body may pause before its connection is closed (env JANK_API_READ_TIMEOUT; default 30).")
  var readTimeout: String?

  @Option(help: "Seconds to wait for the supervisor's answer to register, build, stop… and an execute without timeout_ms (env JANK_API_CALL_TIMEOUT; default 3600).")
  var callTimeout: String?

  @Option(help: "trace, debug, info, notice, warning, error or critical (env JANK_LOG_LEVEL).")
  var logLevel: String?

  func run() async throws {
    var logger = Logger(label: "jank-api")
    let configuration: APIConfiguration
    do {
      let settings = Settings(environment: ProcessInfo.processInfo.environment)
      logger.logLevel = try Self.level(settings.value(logLevel, flag: "--log-level", env: "JANK_LOG_LEVEL"))
      configuration = try makeConfiguration(settings)
    } catch {
      FileHandle.standardError.write(Data("jank-api: \(error)\n".utf8))
      throw ExitCode(2)
    }

    Self.raiseOpenFilesLimit()
    let app = makeAPIApplication(configuration: configuration, logger: logger) { [logger, configuration] port in
      var bound = configuration
      bound.port = port
      logger.info(
        "jank-api listening on http://\(bound.address)",
        metadata: ["supervisor_socket": "\(configuration.socketPath)", "auth": "\(configuration.token == nil ? "none" : "bearer")"])
    }
    try await app.runService()
  }

  /// Flags first, then the environment, then the defaults; a malformed value from either is
  /// refused with its name, never silently replaced by the default.
  func makeConfiguration(_ settings: Settings) throws -> APIConfiguration {
    let socketPath: String
    if let path = try settings.value(socket, flag: "--socket", env: "JANK_SOCKET") {
      socketPath = path.value
    } else {
      let state = try settings.value(nil, flag: "", env: "JANK_STATE_DIR")?.value ?? FileManager.default.currentDirectoryPath + "/.jank"
      socketPath = state + "/supervisor.sock"
    }
    var configuration = APIConfiguration(socketPath: socketPath)
    if let listen = try settings.value(listen, flag: "--listen", env: "JANK_API_LISTEN") {
      try configuration.setListen(listen.value, source: listen.source)
    }
    configuration.token = try Self.token(
      file: settings.value(tokenFile, flag: "--token-file", env: "JANK_API_TOKEN_FILE"),
      value: settings.value(nil, flag: "", env: "JANK_API_TOKEN", unset: "to run without a token (on loopback only)"))
    if let limit = try settings.value(bodyLimit, flag: "--body-limit", env: "JANK_API_BODY_LIMIT") {
      guard let bytes = Self.byteCount(limit.value) else {
        throw ValidationError("\(limit.source) must be a whole number of bytes, or of KiB, MiB or GiB, like 1048576 or 64MiB (got '\(limit.value)'); fix it or leave it out for the default of 1 MiB")
      }
      configuration.bodyLimit = bytes
    }
    if let value = try Self.whole(settings.value(maxConnections, flag: "--max-connections", env: "JANK_API_MAX_CONNECTIONS"), in: 1...1_000_000, unit: "connections") {
      configuration.maxConnections = value
    }
    if let value = try Self.whole(settings.value(idleTimeout, flag: "--idle-timeout", env: "JANK_API_IDLE_TIMEOUT"), in: 1...86_400, unit: "seconds") {
      configuration.idleTimeout = .seconds(value)
    }
    if let value = try Self.whole(settings.value(readTimeout, flag: "--read-timeout", env: "JANK_API_READ_TIMEOUT"), in: 1...86_400, unit: "seconds") {
      configuration.readTimeout = .seconds(value)
    }
    if let value = try Self.whole(settings.value(callTimeout, flag: "--call-timeout", env: "JANK_API_CALL_TIMEOUT"), in: 1...604_800, unit: "seconds") {
      configuration.callTimeout = .seconds(value)
    }
    try configuration.validate()
    return configuration
  }

  /// Every connection is a descriptor: the soft limit a shell gives (1024) would stop
  /// jank-api short of its connection limit, so it takes the hard one (it starts no children).
  static func raiseOpenFilesLimit() {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
  }

  /// A whole number in `range`, or a sentence naming the setting.
  static func whole(_ setting: Settings.Value?, in range: ClosedRange<Int>, unit: String) throws -> Int? {
    guard let setting else { return nil }
    guard let value = Int(setting.value), range.contains(value) else {
      throw ValidationError("\(setting.source) must be a whole number of \(unit) from \(range.lowerBound) to \(range.upperBound) (got '\(setting.value)'); fix it or leave it out for the default")
    }
    return value
  }

  /// "1048576", "512KiB", "64MiB", "1GiB" (K, M and G mean the same, as in systemd).
  static func byteCount(_ text: String) -> Int? {
    let units: [(String, Int)] = [("KiB", 10), ("MiB", 20), ("GiB", 30), ("K", 10), ("M", 20), ("G", 30)]
    let (digits, shift) = units.first { text.hasSuffix($0.0) }.map { (String(text.dropLast($0.0.count)), $0.1) } ?? (text, 0)
    guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber), let value = Int(digits), value <= Int.max >> shift else { return nil }
    return value << shift
  }

  static func level(_ setting: Settings.Value?) throws -> Logger.Level {
    guard let setting else { return .info }
    guard let level = Logger.Level(rawValue: setting.value) else {
      let names = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
      throw ValidationError("\(setting.source) must be one of \(names) (got '\(setting.value)')")
    }
    return level
  }

  /// The token from a file (trimmed) or the variable: a named file must hold one, and a
  /// token must be long enough (the message names where it came from).
  static func token(file: Settings.Value?, value: Settings.Value?) throws -> String? {
    let make = "a secret of at least 16 characters (make one with `openssl rand -hex 32 > FILE; chmod 600 FILE`)"
    let token: String
    let source: String
    if let file {
      let path = file.value
      source = "the token file \(path) (from \(file.source))"
      let contents: String
      do {
        contents = try String(contentsOfFile: path, encoding: .utf8)
      } catch {
        var isDirectory: ObjCBool = false
        let reason =
          !FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
          ? "there is no such file" : isDirectory.boolValue ? "it is a directory" : (error as NSError).localizedDescription
        let example = isDirectory.boolValue ? "/etc/jank/api-token" : path
        throw ValidationError(
          "cannot read \(source): \(reason); point \(file.source) at a file readable by the user jank-api runs as, holding \(make.replacingOccurrences(of: "FILE", with: example))")
      }
      token = contents.trimmingCharacters(in: .whitespacesAndNewlines)
      guard !token.isEmpty else { throw ValidationError("\(source) is empty; put in it \(make.replacingOccurrences(of: "FILE", with: path))") }
    } else if let value {
      token = value.value
      source = value.source
    } else {
      return nil
    }
    guard token.count >= APIConfiguration.minimumTokenLength else {
      throw ValidationError(
        "the API token from \(source) is \(token.count) characters; use at least \(APIConfiguration.minimumTokenLength), e.g. from `openssl rand -hex 32`")
    }
    return token
  }
}

/// jank-api's settings: a flag's value, else the environment variable's.
struct Settings {
  struct Value {
    var value: String
    /// The flag or the variable it came from, for messages.
    var source: String
  }

  let environment: [String: String]

  /// An empty value is refused rather than taken as unset: `JANK_X=` in an env file is
  /// more likely a mistake than a wish for the default.
  func value(_ flagValue: String?, flag: String, env: String, unset: String = "for the default") throws -> Value? {
    if let flagValue {
      guard !flagValue.isEmpty else { throw ValidationError("\(flag) is empty; give it a value or leave it out \(unset)") }
      return Value(value: flagValue, source: flag)
    }
    guard let value = environment[env] else { return nil }
    guard !value.isEmpty else { throw ValidationError("\(env) is set but empty; give it a value or unset it \(unset)") }
    return Value(value: value, source: env)
  }
}
