import Foundation
import JankControl
import JankJSON
import Testing

/// Inputs sized to hurt: each costs only the client that sent it, and the supervisor (and
/// jank-api) keep answering everyone else with bounded memory.
@Suite struct HostileInputsTests {
  /// Past the control channel's 16 MiB request limit but under jank-api's 64 MiB body limit:
  /// the big execute fails alone (413), and a hundred small executes sent beside it on the
  /// same two supervisor connections all succeed.
  @Test func aTwentyMiBBodyFailsAloneBesideAHundredSmallExecutes() async throws {
    let workspace = try Workspace()
    let id = try workspace.addHelloWorld("hello")
    let supervisor = try await SupervisorProcess(workspace)
    defer { supervisor.terminate() }
    let api = try await APIProcess(socket: workspace.socket, arguments: ["--body-limit", "64MiB"])
    defer { api.terminate() }
    let client = try await ControlClient.connect(path: workspace.socket)
    defer { Task { await client.close() } }
    _ = try await client.call(ControlMethods.register, RegisterParams(id: id), timeout: .seconds(30))
    #expect(try await http("POST", api.port, "/api/plugin/execute", json: ["id": .string(id), "method": "greet", "args": ["name": "warm"]]).status == 200)
    let before = (supervisor: try #require(residentKB(supervisor.pid)), api: try #require(residentKB(api.process.pid)))

    let big = Data(#"{"id":"\#(id)","method":"echo","args":{"text":""#.utf8) + Data(repeating: UInt8(ascii: "x"), count: 20 << 20) + Data(#""}}"#.utf8)
    let port = api.port
    let (bigAnswer, small) = try await withThrowingTaskGroup(of: (Int, HTTPResponse).self) { group in
      group.addTask { (-1, try await http("POST", port, "/api/plugin/execute", body: big, headers: ["Content-Type": "application/json"])) }
      for n in 0..<100 {
        group.addTask {
          (n, try await http("POST", port, "/api/plugin/execute", json: ["id": .string(id), "method": "greet", "args": ["name": .string("n\(n)")]]))
        }
      }
      var bigAnswer: HTTPResponse?
      var small: [Int: HTTPResponse] = [:]
      for try await (n, answer) in group {
        if n < 0 { bigAnswer = answer } else { small[n] = answer }
      }
      return (try #require(bigAnswer), small)
    }
    #expect(bigAnswer.status == 413, "\(bigAnswer.status): \(bigAnswer.text.prefix(300))")
    #expect(bigAnswer.json?["data"]?["kind"] == "too_large", "\(bigAnswer.text.prefix(300))")
    #expect(small.count == 100)
    for (n, answer) in small {
      #expect(answer.status == 200 && answer.json?["data"]?["data"]?["message"]?.stringValue == "Hello, n\(n)!", "\(n): \(answer.status) \(answer.text.prefix(200))")
    }

    try await expectStillServing(client, id, supervisor: supervisor.pid, rssBeforeKB: before.supervisor)
    let webBegin = ContinuousClock.now
    #expect(try await http("POST", port, "/api/plugin/execute", json: ["id": .string(id), "method": "greet", "args": ["name": "after"]]).status == 200)
    #expect(ContinuousClock.now - webBegin < .seconds(1))
    // The body is held once or twice while it is read and refused (20 MiB each), not kept.
    let apiAfter = try #require(residentKB(api.process.pid))
    #expect(apiAfter - before.api < 128 * 1024, "jank-api RSS \(before.api) kB → \(apiAfter) kB")
  }

  /// A client that writes 100 000 requests and never reads an answer: the supervisor stops
  /// reading it once its in-flight bound and the socket buffers are full, so what it holds
  /// for that client stays small, and every other client is served as before.
  @Test func aClientThatPipelinesAHundredThousandRequestsAndNeverReadsCostsOnlyItself() async throws {
    let workspace = try Workspace()
    let id = try workspace.addHelloWorld("hello")
    let supervisor = try await SupervisorProcess(workspace)
    defer { supervisor.terminate() }
    let client = try await ControlClient.connect(path: workspace.socket)
    defer { Task { await client.close() } }
    _ = try await client.call(ControlMethods.register, RegisterParams(id: id), timeout: .seconds(30))
    let rssBefore = try #require(residentKB(supervisor.pid))

    let flooder = try await RawSocket.connect(workspace.socket)
    let line = Array(#"{"jsonrpc":"2.0","id":1,"method":"plugin.execute","params":{"id":"\#(id)","method":"greet","args":{"name":"flood"}}}"#.utf8) + [10]
    let fd = flooder.fd
    let accepted = await offPool { () -> Int in
      _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
      var accepted = 0
      var stalled = 0
      while accepted < 100_000 * line.count, stalled < 100 {
        let n = line.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n > 0 { accepted += n; stalled = 0 } else { stalled += 1; usleep(10_000) }
      }
      return accepted
    }
    // 100 000 requests are 12 MB; the supervisor stopped reading after a socket buffer's worth
    // and its per-connection in-flight bound.
    #expect(accepted < 100_000 * line.count, "the supervisor read all of a client that never reads: \(accepted) bytes")
    // Product bound: the in-flight bound and the stopped read; 64 MB more would mean the
    // supervisor buffers answers (or requests) for a client that does not read them.
    try await expectStillServing(client, id, supervisor: supervisor.pid, rssBeforeKB: rssBefore)
    let fresh = try await ControlClient.connect(path: workspace.socket)
    let begin = ContinuousClock.now
    #expect(try await fresh.call(ControlMethods.get, PluginIDParams(id: id), timeout: .seconds(5)).status == .ready)
    #expect(ContinuousClock.now - begin < .seconds(1))
    await fresh.close()
    withExtendedLifetime(flooder) {}
  }
}
