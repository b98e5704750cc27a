import Foundation
import JankControl
import JankJSON
import Testing

/// Inputs sized to hurt: each costs only the client (or plugin folder) that sent it, and the
/// supervisor (and jank-api) keep answering everyone else with bounded memory. Each keeps a
/// core busy for seconds (hashing 1 GiB, parsing 20 MiB of JSON), so scripts/test.sh runs
/// them in its load stage, apart from the tests that check behaviour in time.
@Suite struct HostileInputsTests {
  /// A 1 GiB source file (sparse: no disk, but every byte is read to hash it). Hashing it
  /// takes seconds; it runs off the supervisor actor, so `status` and another plugin's calls
  /// answer meanwhile, and once: the next `list` finds the digest cached by the file's
  /// identity, size and times.
  @Test func hashingAHugeSourceHoldsNoOtherCall() async throws {
    let workspace = try Workspace()
    let hello = try workspace.addHelloWorld("hello")
    _ = try workspace.addPlugin("huge", script: "exec '\(Binaries.helloWorld)' \"$@\"", extra: #","build":{"command":["sh","-c","true"]}"#)
    let stack = try await HostileStack(workspace, bystander: hello)
    defer { stack.stop() }
    let client = stack.client
    let lister = try await ControlClient.connect(path: workspace.socket)
    defer { Task { await lister.close() } }
    // Made after the supervisor's start-up scan, so that the list below hashes it first.
    try FileManager.default.createDirectory(atPath: workspace.plugins + "/huge/src", withIntermediateDirectories: true)
    let blob = open(workspace.plugins + "/huge/src/blob", O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
    #expect(blob >= 0 && ftruncate(blob, 1 << 30) == 0)
    close(blob)

    let clock = ContinuousClock()
    let begin = clock.now
    let listing = Task { () throws -> Duration in
      let listed = try await lister.call(ControlMethods.list, ListParams(), timeout: .seconds(120))
      #expect(listed.unregistered.contains { $0.id == "dev.test.huge" && $0.status == .sourceOnly })
      return clock.now - begin
    }
    try await Task.sleep(for: .milliseconds(300))
    let probe = clock.now
    _ = try await client.call(ControlMethods.status, NoParams(), timeout: .seconds(5))
    try await stack.expectBystanderServing()
    let probed = clock.now - probe
    let listed = try await listing.value
    // The hash must really have been under way while the probe ran, or this proves nothing.
    #expect(listed > probed + .milliseconds(300) + .milliseconds(500), "list took \(listed), the probe \(probed): hashing 1 GiB was too quick to tell")

    // Product bound: the digest is cached; a list reads no source again.
    let again = clock.now
    _ = try await lister.call(ControlMethods.list, ListParams(), timeout: .seconds(10))
    #expect(clock.now - again < .seconds(1), "the second list took \(clock.now - again)")
  }

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
    let stack = try await HostileStack(workspace, bystander: id)
    defer { stack.stop() }

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
    try await stack.expectBystanderServing()
    let fresh = try await ControlClient.connect(path: workspace.socket)
    let begin = ContinuousClock.now
    #expect(try await fresh.call(ControlMethods.get, PluginIDParams(id: id), timeout: .seconds(5)).status == .ready)
    #expect(ContinuousClock.now - begin < .seconds(1))
    await fresh.close()
    withExtendedLifetime(flooder) {}
  }
}
