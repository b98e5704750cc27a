import Foundation
import JankControl
import JankJSON
import Testing

/// Random JSON-RPC at the real supervisor's control socket: random bytes, invalid UTF-8,
/// deep nesting, wrong types for every method, broken envelopes, truncated lines and one
/// line over the 16 MiB limit. Every complete line gets exactly one well-formed answer, the
/// supervisor never closes a connection for what a line says, and afterwards it still
/// serves a normal call at once, with its memory where it was. JANK_FUZZ_SEED=N replays a run.
@Suite struct ControlFuzzTests {
  static let cases = 1500
  static let batch = 25

  @Test func randomRequestsGetOneWellFormedAnswerEachAndLeaveTheSupervisorServing() async throws {
    let seed = ProcessInfo.processInfo.environment["JANK_FUZZ_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1 ... .max)
    var random = SplitMix64(seed: seed)
    // Printed first, so that a failure anywhere (a thrown error too) can be replayed.
    print("ControlFuzzTests: seed \(seed) (JANK_FUZZ_SEED=\(seed) replays this run)")
    let workspace = try Workspace()
    let id = try workspace.addHelloWorld("hello")
    let supervisor = try await SupervisorProcess(workspace)
    defer { supervisor.terminate() }
    let client = try await ControlClient.connect(path: workspace.socket)
    _ = try await client.call(ControlMethods.register, RegisterParams(id: id), timeout: .seconds(30))
    let rssBefore = try #require(residentKB(supervisor.pid))

    var sent = 0
    while sent < Self.cases {
      let socket = try await RawSocket.connect(workspace.socket)
      var lines: [[UInt8]] = []
      var ids: Set<Int> = []
      for n in 0..<Self.batch {
        let requestID = sent + n + 1
        lines.append(FuzzLine.make(&random, id: requestID, pluginID: "dev.test.fuzz-\(requestID % 7)"))
        ids.insert(requestID)
      }
      sent += Self.batch
      #expect(await socket.send(Array(lines.joined(separator: [10])) + [10]), "seed \(seed): the supervisor stopped reading")
      let answers = await socket.lines(Self.batch, within: .seconds(20))
      #expect(answers.count == Self.batch, "seed \(seed): \(answers.count) answers to \(Self.batch) lines (batch from id \(sent - Self.batch + 1))")
      var answered: Set<Int> = []
      for answer in answers {
        let problem = FuzzLine.problem(inAnswer: answer, ids: ids, answered: &answered)
        #expect(problem == nil, "seed \(seed): \(problem ?? "") in \(String(decoding: answer.prefix(300), as: UTF8.self))")
      }
    }

    // A line cut off by the client's close gets no answer and costs nothing.
    for _ in 0..<20 {
      let socket = try await RawSocket.connect(workspace.socket)
      let line = FuzzLine.make(&random, id: 1, pluginID: id)
      _ = await socket.send(Array(line.prefix(Int.random(in: 1...max(1, line.count - 1), using: &random))))
      socket.shutdownWrite()
      let end = await socket.read(quiet: .seconds(5))
      #expect(end.closed && end.bytes.isEmpty, "seed \(seed): a truncated line was answered or the connection kept")
    }

    // One line over the limit is refused by its own id, and the connection is kept.
    let big = try await RawSocket.connect(workspace.socket)
    let huge = #"{"jsonrpc":"2.0","id":"huge","method":"plugin.get","params":{"id":""# + String(repeating: "x", count: 17 << 20) + "\"}}\n"
    #expect(await big.send(Array(huge.utf8)))
    let refusal = await big.lines(1, within: .seconds(30))
    #expect(refusal.first.map { String(decoding: $0, as: UTF8.self).contains(#""id":"huge""#) && String(decoding: $0, as: UTF8.self).contains("too_large") } == true, "seed \(seed)")

    // Product bound: nothing above left work behind; a normal call is answered at once.
    let begin = ContinuousClock.now
    let info = try await client.call(ControlMethods.get, PluginIDParams(id: id), timeout: .seconds(5))
    #expect(info.status == .ready)
    let greet = try await client.call(ControlMethods.execute, ExecuteParams(id: id, method: "greet", args: ["name": "fuzz"]), timeout: .seconds(5))
    #expect(greet.data["message"] == "Hello, fuzz!")
    #expect(ContinuousClock.now - begin < .seconds(1), "seed \(seed)")
    // The 17 MiB line was read into a bounded buffer and dropped; requests were answered and
    // forgotten. 64 MB of growth would mean something kept them.
    let rssAfter = try #require(residentKB(supervisor.pid))
    #expect(rssAfter - rssBefore < 64 * 1024, "seed \(seed): supervisor RSS went from \(rssBefore) kB to \(rssAfter) kB")
    await client.close()
  }
}

/// The process's resident set in kB, from /proc.
func residentKB(_ pid: pid_t) -> Int? {
  guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
  let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
  return line.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") }
}

/// Small, fast and seedable: a failing run is replayed from the seed it printed.
struct SplitMix64: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
