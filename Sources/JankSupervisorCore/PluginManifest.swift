import Foundation
public import JankJSON

/// A validated plugin.json (design §4). Unknown fields are kept in `raw` and ignored.
public struct PluginManifest: Sendable, Equatable {
  public struct RestartPolicy: Sendable, Equatable {
    public enum Mode: String, Sendable { case always, onFailure = "on-failure", never }
    public var policy: Mode = .onFailure
    public var initialDelayMs = 200
    public var maxDelayMs = 30_000
    public var maxRestarts = 5
    public var windowSeconds = 60
  }

  public struct HealthPolicy: Sendable, Equatable {
    public var intervalMs = 10_000
    public var timeoutMs = 2_000
    public var failures = 3
  }

  public struct BuildSpec: Sendable, Equatable {
    public var command: [String]
    public var sources: [String]
    /// Where the build leaves the binary, relative to the plugin folder; nil when the
    /// command writes `binary` itself.
    public var output: String?
  }

  public static let types: Set<String> = ["provider", "filter", "handler", "notifier"]

  /// Which protocols the supervisor offers the plugin (design §3): `auto` offers the framed
  /// fast path first and gRPC; `grpc` forces gRPC.
  public enum Transport: String, Sendable {
    case auto, grpc

    /// The value of `JANK_PLUGIN_PROTOCOLS`, in order of preference.
    public var offered: [String] {
      switch self {
      case .auto: ["jank-frame", "grpc"]
      case .grpc: ["grpc"]
      }
    }
  }

  public var id: String
  public var name: String
  public var version: String
  public var type: String
  public var author: String?
  public var description: String?
  public var autoStart = false
  /// Relative to the plugin folder; validated to stay inside it.
  public var binary: String
  public var startTimeoutMs = 30_000
  public var execTimeoutMs = 30_000
  /// nil: the supervisor's default (900 s).
  public var buildTimeoutSeconds: Int?
  public var stopTimeoutMs = 2_000
  public var maxConcurrency = 64
  public var transport = Transport.auto
  public var restart = RestartPolicy()
  public var health = HealthPolicy()
  public var limits: [String: JSONValue] = [:]
  public var resourceLimits = PluginLimits()
  public var build: BuildSpec?
  public var sha256: String?
  public var raw: [String: JSONValue]
}

public enum ManifestError: Error, Sendable, Equatable, CustomStringConvertible {
  /// Every problem found, each a sentence naming the field.
  case invalid([String])

  public var problems: [String] {
    switch self { case .invalid(let problems): problems }
  }

  public var description: String { problems.joined(separator: "; ") }
}

extension PluginManifest {
  /// `^[a-z][a-z0-9]*(\.[a-z0-9][a-z0-9-]*)+$`, at most 100 characters. Checked before an
  /// id is ever used to build a path.
  public static func isValidID(_ id: String) -> Bool {
    guard !id.isEmpty, id.utf8.count <= 100 else { return false }
    let parts = id.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count >= 2 else { return false }
    func isLower(_ c: UInt8) -> Bool { c >= 97 && c <= 122 }
    func isDigit(_ c: UInt8) -> Bool { c >= 48 && c <= 57 }
    let first = Array(parts[0].utf8)
    guard let head = first.first, isLower(head), first.allSatisfy({ isLower($0) || isDigit($0) }) else { return false }
    for part in parts.dropFirst() {
      let bytes = Array(part.utf8)
      guard let lead = bytes.first, isLower(lead) || isDigit(lead) else { return false }
      guard bytes.allSatisfy({ isLower($0) || isDigit($0) || $0 == 45 }) else { return false }
    }
    return true
  }

  /// Parses and validates plugin.json text, reporting every problem at once.
  public static func parse(_ data: Data) throws(ManifestError) -> PluginManifest {
    let json: JSONValue
    do {
      json = try JSONDecoder().decode(JSONValue.self, from: data)
    } catch {
      throw .invalid(["plugin.json is not valid JSON: \(Self.describeJSONError(error))"])
    }
    guard case .object(let raw) = json else {
      throw .invalid(["plugin.json must be a JSON object"])
    }
    var reader = FieldReader(raw: raw)
    let id = reader.string("id", required: true)
    if let id, !isValidID(id) {
      reader.problem("id '\(id)' is not a reverse-domain id (lowercase, dot-separated, like dev.jank.plugins.hello-world, at most 100 characters)")
    }
    let name = reader.string("name", required: true)
    let version = reader.string("version", required: true)
    let type = reader.string("type", required: true)
    if let type, !types.contains(type) {
      reader.problem("type '\(type)' is not one of \(types.sorted().joined(separator: ", "))")
    }
    let binary = reader.string("binary", required: true)
    if let binary, let problem = RelativePath.problem(binary, field: "binary") {
      reader.problem(problem)
    }
    var manifest = PluginManifest(
      id: id ?? "", name: name ?? "", version: version ?? "", type: type ?? "",
      binary: binary ?? "", raw: raw
    )
    manifest.author = reader.string("author")
    manifest.description = reader.string("description")
    manifest.autoStart = reader.bool("auto_start") ?? false
    manifest.startTimeoutMs = reader.int("start_timeout_ms", range: 1...3_600_000) ?? manifest.startTimeoutMs
    manifest.execTimeoutMs = reader.int("exec_timeout_ms", range: 1...86_400_000) ?? manifest.execTimeoutMs
    manifest.stopTimeoutMs = reader.int("stop_timeout_ms", range: 0...600_000) ?? manifest.stopTimeoutMs
    manifest.buildTimeoutSeconds = reader.int("build_timeout_s", range: 1...86_400)
    manifest.maxConcurrency = reader.int("max_concurrency", range: 1...100_000) ?? manifest.maxConcurrency
    if let transport = reader.string("transport") {
      if let value = Transport(rawValue: transport) {
        manifest.transport = value
      } else {
        reader.problem("transport '\(transport)' is not one of auto, grpc (auto lets a Jank SDK plugin use the jank-frame fast path)")
      }
    }
    manifest.sha256 = reader.string("sha256")
    if let sha = manifest.sha256, sha.count != 64 || !sha.allSatisfy(\.isHexDigit) {
      reader.problem("sha256 must be 64 hexadecimal characters")
    }

    if let restart = reader.object("restart") {
      var r = FieldReader(raw: restart, prefix: "restart.")
      if let policy = r.string("policy") {
        if let mode = RestartPolicy.Mode(rawValue: policy) {
          manifest.restart.policy = mode
        } else {
          r.problem("restart.policy '\(policy)' is not one of always, on-failure, never")
        }
      }
      manifest.restart.initialDelayMs = r.int("initial_delay_ms", range: 0...3_600_000) ?? manifest.restart.initialDelayMs
      manifest.restart.maxDelayMs = r.int("max_delay_ms", range: 0...86_400_000) ?? manifest.restart.maxDelayMs
      manifest.restart.maxRestarts = r.int("max_restarts", range: 0...1_000_000) ?? manifest.restart.maxRestarts
      manifest.restart.windowSeconds = r.int("window_s", range: 1...86_400) ?? manifest.restart.windowSeconds
      reader.problems += r.problems
    }
    if let health = reader.object("health") {
      var h = FieldReader(raw: health, prefix: "health.")
      manifest.health.intervalMs = h.int("interval_ms", range: 10...86_400_000) ?? manifest.health.intervalMs
      manifest.health.timeoutMs = h.int("timeout_ms", range: 1...600_000) ?? manifest.health.timeoutMs
      manifest.health.failures = h.int("failures", range: 1...1_000) ?? manifest.health.failures
      reader.problems += h.problems
    }
    if let limits = reader.object("limits") {
      manifest.limits = limits
      manifest.resourceLimits = PluginLimits.parse(limits, problems: &reader.problems)
    }
    if let build = reader.object("build") {
      var b = FieldReader(raw: build, prefix: "build.")
      let command = b.stringArray("command", required: true) ?? []
      if command.isEmpty, b.problems.isEmpty { b.problem("build.command must name a program") }
      let sources = b.stringArray("sources") ?? []
      let output = b.string("output")
      manifest.build = BuildSpec(command: command, sources: sources, output: output)
      reader.problems += b.problems
    }
    guard reader.problems.isEmpty else { throw .invalid(reader.problems) }
    return manifest
  }

  private static func describeJSONError(_ error: any Error) -> String {
    if case DecodingError.dataCorrupted(let context) = error {
      if let underlying = context.underlyingError { return "\(underlying)" }
      return context.debugDescription
    }
    return "\(error)"
  }
}

/// Reads typed fields and records a sentence for each wrong one.
struct FieldReader {
  let raw: [String: JSONValue]
  var prefix = ""
  var problems: [String] = []

  mutating func problem(_ text: String) { problems.append(text) }

  mutating func string(_ key: String, required: Bool = false) -> String? {
    switch raw[key] {
    case .string(let s) where !s.isEmpty || !required: return s
    case .string: problem("\(prefix)\(key) must not be empty"); return nil
    case nil, .null?:
      if required { problem("\(prefix)\(key) is required") }
      return nil
    case let other?: problem("\(prefix)\(key) must be a string, not \(Self.kind(other))"); return nil
    }
  }

  mutating func bool(_ key: String) -> Bool? {
    switch raw[key] {
    case .bool(let b): return b
    case nil, .null?: return nil
    case let other?: problem("\(prefix)\(key) must be true or false, not \(Self.kind(other))"); return nil
    }
  }

  mutating func int(_ key: String, range: ClosedRange<Int>) -> Int? {
    switch raw[key] {
    case .number(let n):
      guard n == n.rounded(), n >= Double(range.lowerBound), n <= Double(range.upperBound) else {
        problem("\(prefix)\(key) must be a whole number from \(range.lowerBound) to \(range.upperBound), not \(JSONValue.number(n))")
        return nil
      }
      return Int(n)
    case nil, .null?: return nil
    case let other?: problem("\(prefix)\(key) must be a number, not \(Self.kind(other))"); return nil
    }
  }

  mutating func object(_ key: String) -> [String: JSONValue]? {
    switch raw[key] {
    case .object(let o): return o
    case nil, .null?: return nil
    case let other?: problem("\(prefix)\(key) must be an object, not \(Self.kind(other))"); return nil
    }
  }

  mutating func stringArray(_ key: String, required: Bool = false) -> [String]? {
    switch raw[key] {
    case .array(let items):
      let strings = items.compactMap(\.stringValue)
      guard strings.count == items.count else {
        problem("\(prefix)\(key) must be an array of strings")
        return nil
      }
      return strings
    case nil, .null?:
      if required { problem("\(prefix)\(key) is required") }
      return nil
    case let other?: problem("\(prefix)\(key) must be an array of strings, not \(Self.kind(other))"); return nil
    }
  }

  static func kind(_ value: JSONValue) -> String { value.kindName }
}

/// Paths in plugin.json are relative and stay inside the plugin folder.
enum RelativePath {
  static func problem(_ path: String, field: String) -> String? {
    if path.hasPrefix("/") { return "\(field) '\(path)' must be relative to the plugin folder" }
    if path.split(separator: "/").contains("..") { return "\(field) '\(path)' must not contain '..'" }
    if path.contains("\0") { return "\(field) must not contain NUL" }
    return nil
  }
}
