import Glibc
public import JankJSON

/// plugin.json `limits` (design §8): rlimits set in the child before exec, and the cgroup
/// limits (`memory_mb`, `cpu_percent`, `pids`).
public struct PluginLimits: Sendable, Equatable {
  public var openFiles: Int?
  public var cpuSeconds: Int?
  public var coreDumps: Bool?
  public var addressSpaceMB: Int?
  public var memoryMB: Int?
  public var cpuPercent: Int?
  public var pids: Int?

  public init() {}

  static let keys = ["open_files", "cpu_seconds", "core_dumps", "address_space_mb", "memory_mb", "cpu_percent", "pids"]

  /// Every problem at once, as sentences that name the field.
  static func parse(_ raw: [String: JSONValue], problems: inout [String]) -> PluginLimits {
    var reader = FieldReader(raw: raw, prefix: "limits.")
    var limits = PluginLimits()
    for key in raw.keys.sorted() where !keys.contains(key) {
      reader.problem("limits.\(key) is not a known limit; known: \(keys.joined(separator: ", "))")
    }
    limits.openFiles = reader.int("open_files", range: 16...1_048_576)
    limits.cpuSeconds = reader.int("cpu_seconds", range: 1...31_536_000)
    limits.coreDumps = reader.bool("core_dumps")
    limits.addressSpaceMB = reader.int("address_space_mb", range: 64...16_777_216)
    limits.memoryMB = reader.int("memory_mb", range: 4...16_777_216)
    limits.cpuPercent = reader.int("cpu_percent", range: 1...100_000)
    limits.pids = reader.int("pids", range: 1...4_194_304)
    problems += reader.problems
    return limits
  }

  /// The rlimits the exec shim sets. `cpu_seconds` gets a hard limit two seconds above the
  /// soft one, so the plugin sees SIGXCPU (reported as `cpu-limit`) before SIGKILL.
  var rlimits: [(resource: Int32, soft: UInt64, hard: UInt64)] {
    var result: [(resource: Int32, soft: UInt64, hard: UInt64)] = []
    if let openFiles { result.append((Int32(RLIMIT_NOFILE.rawValue), UInt64(openFiles), UInt64(openFiles))) }
    if let cpuSeconds { result.append((Int32(RLIMIT_CPU.rawValue), UInt64(cpuSeconds), UInt64(cpuSeconds + 2))) }
    if let coreDumps {
      let size: UInt64 = coreDumps ? UInt64.max : 0  // RLIM_INFINITY
      result.append((Int32(RLIMIT_CORE.rawValue), size, size))
    }
    if let addressSpaceMB {
      let bytes = UInt64(addressSpaceMB) << 20
      result.append((Int32(RLIMIT_AS.rawValue), bytes, bytes))
    }
    return result
  }
}
