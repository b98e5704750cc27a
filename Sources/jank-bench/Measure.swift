import CJankAllocCounter
import Foundation
import JankControl
import Synchronization

/// Hands out call numbers to the concurrent callers.
final class Ticket: Sendable {
  private let value = Atomic(0)
  func take() -> Int { value.add(1, ordering: .relaxed).oldValue }
}

/// Latency figures of one measurement.
struct Stats {
  var calls: Int
  var seconds: Double
  var meanMicroseconds: Double
  var p50Microseconds: Double
  var p99Microseconds: Double
  var callsPerSecond: Double { Double(calls) / seconds }

  /// The round with the median calls/s.
  static func medianRound(_ rounds: [Stats]) -> Stats {
    rounds.sorted { $0.callsPerSecond < $1.callsPerSecond }[rounds.count / 2]
  }
}

enum Measure {
  /// `calls` calls of `body`, `concurrency` at a time, after a short warm-up.
  static func calls(
    _ calls: Int, concurrency: Int, on executor: (any TaskExecutor)? = nil, _ body: @escaping @Sendable () async throws -> Void
  ) async throws -> Stats {
    for _ in 0..<min(200, calls) { try await body() }
    let next = Ticket()
    let clock = ContinuousClock()
    let begin = clock.now
    let latencies = try await withThrowingTaskGroup(of: [Duration].self) { group in
      for _ in 0..<concurrency {
        group.addTask(executorPreference: executor) {
          var mine: [Duration] = []
          while next.take() < calls {
            let start = clock.now
            try await body()
            mine.append(clock.now - start)
          }
          return mine
        }
      }
      var all: [Duration] = []
      for try await part in group { all += part }
      return all.sorted()
    }
    let elapsed = (clock.now - begin).seconds
    let micro = latencies.map { $0.seconds * 1e6 }
    func percentile(_ p: Double) -> Double { micro.isEmpty ? 0 : micro[Int(p * Double(micro.count - 1))] }
    return Stats(
      calls: calls, seconds: elapsed, meanMicroseconds: micro.reduce(0, +) / Double(max(micro.count, 1)),
      p50Microseconds: percentile(0.5), p99Microseconds: percentile(0.99))
  }

  /// Heap allocations in this process per sequential call of `body` (everything the
  /// supervisor side does for a call: actors, encoding, the transport).
  static func allocationsPerCall(_ calls: Int, _ body: () async throws -> Void) async throws -> Double {
    for _ in 0..<min(200, calls) { try await body() }
    let before = jank_alloc_count()
    for _ in 0..<calls { try await body() }
    return Double(jank_alloc_count() - before) / Double(max(calls, 1))
  }

  /// The median of `count` runs of `body`, each returning the duration it measured.
  static func median(_ count: Int, _ body: () async throws -> Duration) async throws -> Duration? {
    guard count > 0 else { return nil }
    var durations: [Duration] = []
    for _ in 0..<count { durations.append(try await body()) }
    return durations.sorted()[count / 2]
  }

  static func ms(_ duration: Duration?) -> String {
    duration.map { String(format: "%.2f ms", $0.seconds * 1000) } ?? "-"
  }
}

/// One printed line of the table.
struct Row: CustomStringConvertible {
  static let header = "what".padding(toLength: 80, withPad: " ", startingAt: 0) + "   calls/s    mean µs   p50 µs   p99 µs"
  let label: String
  let stats: Stats

  init(_ label: String, _ stats: Stats) {
    self.label = label
    self.stats = stats
  }

  var description: String {
    label.padding(toLength: 80, withPad: " ", startingAt: 0)
      + String(format: " %9.0f %10.1f %8.0f %8.0f", stats.callsPerSecond, stats.meanMicroseconds, stats.p50Microseconds, stats.p99Microseconds)
  }
}

/// The go-plugin side: Tests/Fixtures/go-host in --bench mode against hello-world-go.
enum GoPair {
  struct Result {
    var stats: Stats
    var spawnMedianMs: Double?
  }

  static func run(host: String, plugin: String, calls: Int, concurrency: Int, spawns: Int) throws -> Result {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: host)
    process.arguments = ["--bench", plugin, String(calls), String(concurrency), String(spawns)]
    process.environment = ProcessInfo.processInfo.environment.merging(["JANK_PLUGIN": "jank-plugin"]) { $1 }
    let out = Pipe()
    process.standardOutput = out
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0,
      let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
    else {
      throw BenchError("the Go host failed (exit \(process.terminationStatus)): \(String(decoding: data, as: UTF8.self))")
    }
    let number = { (key: String) in (object[key] as? NSNumber)?.doubleValue ?? 0 }
    let callsPerSecond = number("calls_per_s")
    let stats = Stats(
      calls: calls, seconds: callsPerSecond > 0 ? Double(calls) / callsPerSecond : 0, meanMicroseconds: number("mean_us"),
      p50Microseconds: number("p50_us"), p99Microseconds: number("p99_us"))
    return Result(stats: stats, spawnMedianMs: (object["spawn_median_ms"] as? NSNumber)?.doubleValue)
  }
}

struct BenchError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// Plugins folder with copies of the Swift hello-world: one per transport to call, one to crash.
struct BenchWorkspace {
  let root = "/tmp/jank-bench-\(getpid())"
  var plugins: String { root + "/plugins" }
  var state: String { root + "/state" }
  var socket: String { root + "/state/supervisor.sock" }

  init(swiftBinary: String) throws {
    guard FileManager.default.isExecutableFile(atPath: swiftBinary) else {
      throw BenchError("no Swift hello-world at \(swiftBinary); build it (swift build -c release --product hello-world) or pass --swift-plugin")
    }
    let copies = [
      ("hello", ""), ("hello-grpc", #","transport":"grpc""#),
      ("crash", #","restart":{"policy":"always","initial_delay_ms":0,"max_restarts":100000,"window_s":1}"#),
    ]
    for (name, extra) in copies {
      let dir = plugins + "/" + name
      try FileManager.default.createDirectory(atPath: dir + "/bin", withIntermediateDirectories: true)
      let manifest = #"{"id":"dev.bench.\#(name)","name":"\#(name)","version":"1.0.0","type":"handler","binary":"bin/hello-world"\#(extra)}"#
      try manifest.write(toFile: dir + "/plugin.json", atomically: true, encoding: .utf8)
      try FileManager.default.copyItem(atPath: swiftBinary, toPath: dir + "/bin/hello-world")
    }
    try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
  }

  func remove() { try? FileManager.default.removeItem(atPath: root) }
}
