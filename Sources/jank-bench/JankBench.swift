import ArgumentParser
import Foundation
import JankControl
import JankJSON
import JankExecutors
import JankSupervisorCore
import NIOPosix
import Logging

/// Benchmarks (not tests): figures printed side by side in one run. Run through
/// scripts/bench.sh, which builds release binaries, the Go plugin and the Go host first.
@main
struct JankBench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "jank-bench",
    abstract: "Measure execute latency and throughput, spawn and crash recovery, beside a go-plugin Go pair.")

  @Option(help: "Sequential calls per measurement.") var calls = 10_000
  @Option(help: "Launches for the spawn -> ready median.") var spawns = 50
  @Option(help: "SIGKILLs for the crash -> ready median.") var crashes = 20
  @Option(help: "The Swift hello-world binary (default: next to jank-bench).") var swiftPlugin: String?
  @Option(help: "The Go hello-world-go binary (plugins/hello-world-go/bin/hello-world-go).") var goPlugin: String?
  @Option(help: "The go-plugin host built from Tests/Fixtures/go-host.") var goHost: String?
  @Option(help: "Plugin counts for the scale figures, e.g. 100,500,1000 (none by default).") var scale: String?
  @Option(help: "Seconds of idle for the scale figures' CPU measurement.") var idleSeconds = 30
  @Option(help: "Where cgroup filesystems are mounted; a missing path runs plugins without cgroups, as the Go pair runs.")
  var cgroupRoot = "/sys/fs/cgroup"
  @Flag(help: "Only the scale figures, from a supervisor that did nothing else before (its RSS and CPU are the figures).")
  var scaleOnly = false
  @Flag(help: "Only the headline: sequential calls over jank-frame beside the Go pair (three interleaved rounds).")
  var sequentialOnly = false

  func run() async throws {
    let here = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
    let swiftBinary = swiftPlugin ?? here + "/hello-world"
    let workspace = try BenchWorkspace(swiftBinary: swiftBinary)
    defer { workspace.remove() }
    var logger = Logger(label: "jank-bench")
    logger.logLevel = .error
    // One event loop carries the plugin connections. Callers that prefer it as their task
    // executor send and receive on that thread (the in-process embedding's best case); the
    // control server runs each request as a task on the global pool, which the "callers on
    // the pool" row measures.
    let loops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let loopExecutor = EventLoopTaskExecutor(loops.next())
    var configuration = SupervisorConfiguration(pluginsDirectory: workspace.plugins, stateDirectory: workspace.state, socketPath: workspace.socket)
    configuration.eventLoopGroup = loops
    configuration.cgroupRoot = cgroupRoot
    let supervisor = Supervisor(configuration: configuration, logger: logger)
    let server = try await ControlServer.bind(path: workspace.socket, router: supervisor.makeRouter(), logger: logger)
    let serving = Task { await server.run() }
    defer { serving.cancel() }
    if scaleOnly {
      print("jank-bench: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 20) MiB RAM")
      for count in (scale ?? "100,500,1000").split(separator: ",").compactMap({ Int($0) }) {
        try await Scale.run(count: count, supervisor: supervisor, workspace: workspace, swiftBinary: swiftBinary, idleSeconds: idleSeconds)
      }
      await supervisor.stopAll()
      return
    }
    // The same Swift plugin binary twice: negotiated jank-frame (the default) and forced gRPC.
    let transports = sequentialOnly ? [("jank-frame", "dev.bench.hello")] : [("jank-frame", "dev.bench.hello"), ("gRPC", "dev.bench.hello-grpc")]
    for (_, id) in transports { _ = try await supervisor.register(id: id) }

    print("jank-bench: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 20) MiB RAM, \(calls) calls per figure")
    print("")
    print(Row.header)
    let args: [String: JSONValue] = ["name": "bench"]
    let goPair = goHost.flatMap { host in goPlugin.map { (host, $0) } }
    // Supervisor -> Swift plugin: what every plugin.execute pays inside the supervisor.
    for concurrency in sequentialOnly ? [1] : [1, 8, 64] {
      // Sequential figures are the headline: interleave three rounds of each and keep each
      // side's median round, so that a burst of noise on the machine favours neither.
      let rounds = concurrency == 1 ? 3 : 1
      var swift: [[Stats]] = Array(repeating: [], count: transports.count)
      var go: [Stats] = []
      for _ in 0..<rounds {
        for (index, (_, id)) in transports.enumerated() {
          swift[index].append(try await Measure.calls(calls, concurrency: concurrency, on: loopExecutor) {
            _ = try await supervisor.execute(id: id, method: "greet", args: args, timeoutMs: nil)
          })
        }
        if let (host, plugin) = goPair {
          go.append(try GoPair.run(host: host, plugin: plugin, calls: calls, concurrency: concurrency, spawns: 0).stats)
        }
      }
      let suffix = rounds > 1 ? ", median of \(rounds) rounds" : ""
      let medians = swift.map(Stats.medianRound)
      for ((transport, _), stats) in zip(transports, medians) {
        print(Row("supervisor -> Swift plugin (\(transport)), \(concurrency) in flight" + suffix, stats))
      }
      if concurrency == 1, !sequentialOnly {
        // As plugin.execute from the control channel runs: a pool task, a hop to the loop and back.
        let pooled = try await Measure.calls(calls, concurrency: 1) {
          _ = try await supervisor.execute(id: transports[0].1, method: "greet", args: args, timeoutMs: nil)
        }
        print(Row("supervisor -> Swift plugin (jank-frame), callers on the pool, 1 in flight", pooled))
      }
      if !go.isEmpty {
        let goMedian = Stats.medianRound(go)
        print(Row("go-plugin Go host -> Go plugin (gRPC), \(concurrency) in flight" + suffix, goMedian))
        var ratios = zip(transports, medians).map { "\($0.0)/Go \(String(format: "%.2f", $1.callsPerSecond / goMedian.callsPerSecond))" }
        if medians.count > 1 { ratios.append("jank-frame/gRPC \(String(format: "%.2f", medians[0].callsPerSecond / medians[1].callsPerSecond))") }
        print("  ratio calls/s: " + ratios.joined(separator: ", "))
      }
    }
    if sequentialOnly {
      await supervisor.stopAll()
      return
    }
    for (transport, id) in transports {
      let perCall = try await Measure.allocationsPerCall(min(calls, 5_000)) {
        _ = try await supervisor.execute(id: id, method: "greet", args: args, timeoutMs: nil)
      }
      print("allocations per call in the supervisor process (\(transport)), sequential: \(String(format: "%.1f", perCall))")
    }
    // One more hop: JSON-RPC over the control socket, as jankctl and jank-api call.
    let id = transports[0].1
    let client = try await ControlClient.connect(path: workspace.socket)
    for concurrency in [1, 8, 64] {
      let stats = try await Measure.calls(calls, concurrency: concurrency) {
        _ = try await client.call(ControlMethods.execute, ExecuteParams(id: id, method: "greet", args: args))
      }
      print(Row("control channel (JSON-RPC) -> supervisor -> plugin (jank-frame), \(concurrency) in flight", stats))
    }
    await client.close()

    print("")
    for (transport, id) in transports {
      let spawn = try await Measure.median(spawns) {
        _ = try await supervisor.stop(id: id)
        let begin = ContinuousClock.now
        _ = try await supervisor.start(id: id)
        return ContinuousClock.now - begin
      }
      print("spawn -> ready (handshake + health), Swift plugin (\(transport)), median of \(spawns): \(Measure.ms(spawn))")
    }
    if let (host, plugin) = goPair, spawns > 0 {
      let go = try GoPair.run(host: host, plugin: plugin, calls: 0, concurrency: 1, spawns: spawns)
      print("spawn -> ready (handshake + health + dispense), go-plugin Go pair, median of \(spawns): \(go.spawnMedianMs.map { String(format: "%.2f ms", $0) } ?? "-")")
    }
    let crashID = "dev.bench.crash"
    _ = try await supervisor.register(id: crashID)
    let crash = try await Measure.median(crashes) {
      let pid = try require(try await supervisor.get(id: crashID).pid, "pid of the crash plugin")
      let begin = ContinuousClock.now
      kill(pid_t(pid), SIGKILL)
      while true {
        let info = try await supervisor.get(id: crashID)
        if info.status == .ready, let now = info.pid, now != pid { break }
        try await Task.sleep(for: .microseconds(200))
      }
      return ContinuousClock.now - begin
    }
    print("crash (SIGKILL) -> ready again, initial_delay_ms 0, median of \(crashes): \(Measure.ms(crash))")
    for count in (scale ?? "").split(separator: ",").compactMap({ Int($0) }) {
      try await Scale.run(count: count, supervisor: supervisor, workspace: workspace, swiftBinary: swiftBinary, idleSeconds: idleSeconds)
    }
    await supervisor.stopAll()
  }
}

/// `#require` for a command-line program: nil is an error that says what was missing.
func `require`<T>(_ value: T?, _ what: String = "value") throws -> T {
  guard let value else { throw ValidationError("missing \(what)") }
  return value
}
