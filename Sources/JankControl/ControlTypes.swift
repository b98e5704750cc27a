public import JankJSON

// The request and response types of the control methods, shared by the supervisor,
// jankctl, jank-api and the tests. JSON field names are the contract (snake_case).

/// Where a plugin is in its life (design §5).
public enum PluginStatus: String, Codable, Sendable, CaseIterable, Comparable {
  // discovered, not registered
  case available
  case sourceOnly = "source_only"
  case incomplete
  // registered
  case starting, ready, running, backoff, stopped, error

  public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// How the last process of a plugin ended.
public struct LastExit: Codable, Sendable, Equatable {
  public enum Reason: String, Codable, Sendable {
    case exited, signaled
    case oomKilled = "oom-killed"
    case cpuLimit = "cpu-limit"
    case healthFailed = "health-failed"
    case startTimeout = "start-timeout"
    case handshakeFailed = "handshake-failed"
    /// The binary's SHA-256 is not plugin.json's `sha256`: it was never started.
    case digestMismatch = "digest-mismatch"
    case stopped
  }

  public var reason: Reason
  public var code: Int?
  public var signal: Int?
  /// ISO-8601.
  public var at: String

  public init(reason: Reason, code: Int? = nil, signal: Int? = nil, at: String) {
    self.reason = reason
    self.code = code
    self.signal = signal
    self.at = at
  }
}

/// Current resource usage of a plugin process, read from its cgroup.
public struct ResourceUsage: Codable, Sendable, Equatable {
  public var memoryBytes: Int?
  public var pids: Int?

  enum CodingKeys: String, CodingKey { case memoryBytes = "memory_bytes", pids }

  public init(memoryBytes: Int?, pids: Int?) {
    self.memoryBytes = memoryBytes
    self.pids = pids
  }
}

/// A registered plugin as the supervisor sees it.
public struct PluginInfo: Codable, Sendable, Equatable {
  public var id: String
  public var name: String
  public var version: String
  public var type: String
  public var description: String?
  public var author: String?
  public var directory: String
  public var binary: String
  public var status: PluginStatus
  /// What the operator asked for: "running" or "stopped".
  public var desired: String
  public var autoStart: Bool
  public var pid: Int?
  public var startedAt: String?
  public var uptimeSeconds: Double?
  public var restarts: Int
  public var consecutiveFailures: Int
  public var inFlight: Int
  public var lastExit: LastExit?
  public var lastError: String?
  public var nextRestartAt: String?
  /// The wire protocol the running process negotiated ("grpc").
  public var transport: String?
  public var limits: JSONValue?
  /// What holds the limits of the running process: "cgroup-v2", "cgroup-v1" or "rlimit-only".
  public var limitsEnforced: String?
  /// Why cgroups are not used, when `limits_enforced` is "rlimit-only".
  public var limitsNote: String?
  /// The running process's current usage, from its cgroup.
  public var usage: ResourceUsage?
  /// What the supervisor could not look at in the plugin's folder (more folders, or deeper,
  /// than it walks): those sources are neither hashed nor watched.
  public var folderProblem: String?
  /// How the plugin is kept apart from the supervisor and other plugins: "uid" (a uid of
  /// its own) or "none".
  public var isolation: String?
  /// Why, when `isolation` is "none".
  public var isolationNote: String?
  /// The uid (and gid) the plugin runs as, in uid isolation.
  public var uid: Int?

  enum CodingKeys: String, CodingKey {
    case id, name, version, type, description, author, directory, binary, status, desired
    case autoStart = "auto_start", pid, startedAt = "started_at", uptimeSeconds = "uptime_s"
    case restarts, consecutiveFailures = "consecutive_failures", inFlight = "in_flight"
    case lastExit = "last_exit", lastError = "last_error", nextRestartAt = "next_restart_at"
    case transport, limits, limitsEnforced = "limits_enforced", limitsNote = "limits_note", usage
    case folderProblem = "folder_problem", isolation, isolationNote = "isolation_note", uid
  }

  public init(
    id: String, name: String, version: String, type: String, description: String? = nil,
    author: String? = nil, directory: String, binary: String, status: PluginStatus,
    desired: String, autoStart: Bool, pid: Int? = nil, startedAt: String? = nil,
    uptimeSeconds: Double? = nil, restarts: Int = 0, consecutiveFailures: Int = 0, inFlight: Int = 0,
    lastExit: LastExit? = nil, lastError: String? = nil, nextRestartAt: String? = nil,
    transport: String? = nil, limits: JSONValue? = nil, limitsEnforced: String? = nil,
    limitsNote: String? = nil, usage: ResourceUsage? = nil, folderProblem: String? = nil,
    isolation: String? = nil, isolationNote: String? = nil, uid: Int? = nil
  ) {
    self.id = id
    self.name = name
    self.version = version
    self.type = type
    self.description = description
    self.author = author
    self.directory = directory
    self.binary = binary
    self.status = status
    self.desired = desired
    self.autoStart = autoStart
    self.pid = pid
    self.startedAt = startedAt
    self.uptimeSeconds = uptimeSeconds
    self.restarts = restarts
    self.consecutiveFailures = consecutiveFailures
    self.inFlight = inFlight
    self.lastExit = lastExit
    self.lastError = lastError
    self.folderProblem = folderProblem
    self.nextRestartAt = nextRestartAt
    self.transport = transport
    self.limits = limits
    self.limitsEnforced = limitsEnforced
    self.limitsNote = limitsNote
    self.usage = usage
    self.isolation = isolation
    self.isolationNote = isolationNote
    self.uid = uid
  }
}

/// A plugin folder found under the plugins directory but not registered.
public struct PluginDiscoveryInfo: Codable, Sendable, Equatable {
  public var id: String?
  public var name: String?
  public var version: String?
  public var type: String?
  public var directory: String
  public var status: PluginStatus
  /// Why the plugin is `incomplete` (every problem, not just the first) or needs a build.
  public var problems: [String]

  public init(
    id: String?, name: String?, version: String?, type: String?, directory: String,
    status: PluginStatus, problems: [String]
  ) {
    self.id = id
    self.name = name
    self.version = version
    self.type = type
    self.directory = directory
    self.status = status
    self.problems = problems
  }
}

public struct PluginList: Codable, Sendable, Equatable {
  public var registered: [PluginInfo]
  public var unregistered: [PluginDiscoveryInfo]

  public init(registered: [PluginInfo], unregistered: [PluginDiscoveryInfo]) {
    self.registered = registered
    self.unregistered = unregistered
  }
}

public struct SupervisorStatus: Codable, Sendable, Equatable {
  public var version: String
  public var pid: Int
  public var uptimeSeconds: Double
  public var pluginsDirectory: String
  public var stateDirectory: String
  public var socket: String
  public var registered: Int
  /// Registered plugins by status.
  public var statuses: [String: Int]

  enum CodingKeys: String, CodingKey {
    case version, pid, uptimeSeconds = "uptime_s", pluginsDirectory = "plugins_dir"
    case stateDirectory = "state_dir", socket, registered, statuses
  }

  public init(
    version: String, pid: Int, uptimeSeconds: Double, pluginsDirectory: String,
    stateDirectory: String, socket: String, registered: Int, statuses: [String: Int]
  ) {
    self.version = version
    self.pid = pid
    self.uptimeSeconds = uptimeSeconds
    self.pluginsDirectory = pluginsDirectory
    self.stateDirectory = stateDirectory
    self.socket = socket
    self.registered = registered
    self.statuses = statuses
  }
}

// MARK: - Params and results

public struct NoParams: Codable, Sendable, Equatable {
  public init() {}
}

public struct ListParams: Codable, Sendable, Equatable {
  public var status: PluginStatus?
  public init(status: PluginStatus? = nil) { self.status = status }
}

public struct PluginIDParams: Codable, Sendable, Equatable {
  public var id: String
  public init(id: String) { self.id = id }
}

public struct RegisterParams: Codable, Sendable, Equatable {
  public var id: String
  public var rebuild: Bool?
  public init(id: String, rebuild: Bool? = nil) {
    self.id = id
    self.rebuild = rebuild
  }
}

public struct ExecuteParams: Codable, Sendable, Equatable {
  public var id: String
  public var method: String
  public var args: [String: JSONValue]?
  public var timeoutMs: Int?

  enum CodingKeys: String, CodingKey { case id, method, args, timeoutMs = "timeout_ms" }

  public init(id: String, method: String, args: [String: JSONValue]? = nil, timeoutMs: Int? = nil) {
    self.id = id
    self.method = method
    self.args = args
    self.timeoutMs = timeoutMs
  }
}

public struct ExecuteResult: Codable, Sendable, Equatable {
  public var method: String
  public var data: [String: JSONValue]
  public init(method: String, data: [String: JSONValue]) {
    self.method = method
    self.data = data
  }
}

public struct LogsParams: Codable, Sendable, Equatable {
  public var id: String
  /// How many of the last lines (default 100, at most 1000).
  public var tail: Int?
  /// "plugin" (its stdout and stderr, the default) or "build" (its last build's log).
  public var source: String?
  public init(id: String, tail: Int? = nil, source: String? = nil) {
    self.id = id
    self.tail = tail
    self.source = source
  }
}

public struct LogsResult: Codable, Sendable, Equatable {
  public var id: String
  public var lines: [String]
  /// Set when older lines were left out to keep the answer within ``byteBudget``.
  public var truncated: Bool?
  /// How many of the requested lines were left out.
  public var omittedLines: Int?

  /// The most an answer carries, JSON-escaped: a plugin that logs control characters must
  /// not make the supervisor build (or a client read) an answer of hundreds of megabytes.
  public static let byteBudget = 4 << 20

  enum CodingKeys: String, CodingKey { case id, lines, truncated, omittedLines = "omitted_lines" }

  public init(id: String, lines: [String], truncated: Bool? = nil, omittedLines: Int? = nil) {
    self.id = id
    self.lines = lines
    self.truncated = truncated
    self.omittedLines = omittedLines
  }

  /// The newest of `lines` whose JSON-escaped size fits `budget`, and how many were left out.
  public static func newest(_ lines: [String], id: String, budget: Int = byteBudget) -> LogsResult {
    var size = 0
    var kept = 0
    for line in lines.reversed() {
      var cost = 3  // quotes and comma
      for byte in line.utf8 {
        cost += byte < 0x20 ? 6 : (byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\")) ? 2 : 1
      }
      guard size + cost <= budget else { break }
      size += cost
      kept += 1
    }
    let omitted = lines.count - kept
    return LogsResult(id: id, lines: Array(lines.suffix(kept)), truncated: omitted > 0 ? true : nil, omittedLines: omitted > 0 ? omitted : nil)
  }
}

/// Prometheus text exposition (format 0.0.4) of the supervisor's metrics.
public struct MetricsResult: Codable, Sendable, Equatable {
  public var text: String
  public init(text: String) { self.text = text }
}

public struct UnregisterResult: Codable, Sendable, Equatable {
  public var id: String
  public init(id: String) { self.id = id }
}

/// A control method: its wire name and the types of its params and result.
public struct ControlMethod<Params: Codable & Sendable, Result: Codable & Sendable>: Sendable {
  public let name: String
  public init(_ name: String) { self.name = name }
}

/// Every control method of design §6 that the supervisor serves.
public enum ControlMethods {
  public static let list = ControlMethod<ListParams, PluginList>("plugin.list")
  public static let get = ControlMethod<PluginIDParams, PluginInfo>("plugin.get")
  public static let register = ControlMethod<RegisterParams, PluginInfo>("plugin.register")
  public static let unregister = ControlMethod<PluginIDParams, UnregisterResult>("plugin.unregister")
  public static let start = ControlMethod<PluginIDParams, PluginInfo>("plugin.start")
  public static let stop = ControlMethod<PluginIDParams, PluginInfo>("plugin.stop")
  public static let restart = ControlMethod<PluginIDParams, PluginInfo>("plugin.restart")
  public static let build = ControlMethod<PluginIDParams, PluginInfo>("plugin.build")
  public static let logs = ControlMethod<LogsParams, LogsResult>("plugin.logs")
  public static let execute = ControlMethod<ExecuteParams, ExecuteResult>("plugin.execute")
  public static let status = ControlMethod<NoParams, SupervisorStatus>("supervisor.status")
  public static let metrics = ControlMethod<NoParams, MetricsResult>("supervisor.metrics")
}
