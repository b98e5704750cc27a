import Foundation
import JankControl
import JankJSON
import Logging
import Testing

/// What one client may cost the control server (`withControlServer`: 4 KiB lines, 64
/// connections, 16 requests in flight per connection, 500 ms for a partial line). Hitting a
/// limit costs only the client that hit it.
@Suite struct ControlChannelLimitsTests {
  @Test func aTooLargeRequestFailsAloneAndTheCallsBesideItComplete() async throws {
    try await withControlServer { path in
      let client = try await ControlClient.connect(path: path)
      let slow = Task { try await client.call(TestMethods.echo, EchoParams(text: "slow", delayMs: 300)) }
      await #expect {
        try await client.call(TestMethods.echo, EchoParams(text: String(repeating: "x", count: 10_000)))
      } throws: { error in
        (error as? ControlError)?.kind == .tooLarge
      }
      #expect(try await slow.value.text == "slow")
      #expect(try await client.call(TestMethods.echo, EchoParams(text: "after")).text == "after")
      await client.close()
    }
  }

  @Test func aTooLargeRequestIsAnsweredUnderItsOwnID() async throws {
    try await withControlServer { path in
      let raw = try RawLineClient(path: path)
      raw.send(#"{"id":"big-one","jsonrpc":"2.0","method":"test.echo","params":{"text":""# + String(repeating: "y", count: 10_000) + "\"}}\n")
      let answer = await raw.readLine()
      #expect(field(answer, "id") == "big-one")
      #expect(field(answer, "error", "data", "kind") == "too_large")
    }
  }

  @Test func aClientThatPipelinesWithoutReadingIsStoppedAndOthersAreServed() async throws {
    try await withControlServer { path in
      let flooder = try RawLineClient(path: path)
      let line = Array((#"{"jsonrpc":"2.0","id":1,"method":"test.echo","params":{"text":"flood"}}"# + "\n").utf8)
      // Non-blocking: how much the server lets in before it stops reading.
      _ = fcntl(flooder.fd, F_SETFL, fcntl(flooder.fd, F_GETFL) | O_NONBLOCK)
      var accepted = 0
      var stalled = 0
      while accepted < 100_000 * line.count, stalled < 50 {
        let n = line.withUnsafeBytes { send(flooder.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n > 0 { accepted += n; stalled = 0 } else { stalled += 1; try await Task.sleep(for: .milliseconds(10)) }
      }
      // 100 000 requests would be 7 MB; the server stopped reading after socket buffers' worth.
      #expect(accepted < 4 << 20, "the server kept reading a client that never reads: \(accepted) bytes")

      let other = try await ControlClient.connect(path: path)
      let begin = ContinuousClock.now
      // No product time bound: a starved client is never answered at all. Alone this takes
      // milliseconds; beside the whole suite's tests in this process on a loaded 2-core
      // machine, it once took 1.2 s.
      #expect(try await other.call(TestMethods.echo, EchoParams(text: "served"), timeout: .seconds(10)).text == "served")
      #expect(ContinuousClock.now - begin < .seconds(10))
      await other.close()
    }
  }

  /// A client that pipelines requests for big answers and never reads: the server makes no
  /// more answers than the socket takes (and the in-flight limit), not one per request read.
  @Test func aClientThatNeverReadsBigAnswersGetsNoMoreMadeThanItReads() async throws {
    let probe = TestServerProbe()
    try await withControlServer(probe: probe) { path in
      let flooder = try RawLineClient(path: path)
      // 500 requests in one write: one read of the server's brings hundreds of them.
      flooder.send(String(repeating: #"{"jsonrpc":"2.0","id":1,"method":"test.big"}"# + "\n", count: 500))
      try await Task.sleep(for: .seconds(1))
      let made = probe.bigAnswersMade.withLock { $0 }
      // Product bound: 16 in flight (withControlServer's limit), then nothing new while the
      // socket does not take output; the socket's buffers hold a few 256 KiB answers.
      #expect(made <= 32, "\(made) answers of 256 KiB were made for a client that reads none")
      #expect(made >= 1)
      let other = try await ControlClient.connect(path: path)
      #expect(try await other.call(TestMethods.echo, EchoParams(text: "served"), timeout: .seconds(10)).text == "served")
      await other.close()
    }
  }

  /// Connections the server refuses for who they are (as the supervisor refuses a plugin)
  /// never take the places of the ones it serves.
  @Test func refusedConnectionsDoNotCountAgainstTheLimit() async throws {
    let probe = TestServerProbe()
    try await withControlServer(probe: probe) { path in
      probe.refusing.withLock { $0 = true }
      var refused: [RawLineClient] = []
      for _ in 0..<80 {
        let client = try RawLineClient(path: path)
        let answer = await client.readLine()
        #expect(field(answer, "error", "message")?.stringValue?.hasPrefix("refused") == true, "\(String(describing: answer))")
        refused.append(client)  // held open: the server's side lingers to let it read
      }
      probe.refusing.withLock { $0 = false }
      let client = try await ControlClient.connect(path: path)
      #expect(try await client.call(TestMethods.echo, EchoParams(text: "in"), timeout: .seconds(5)).text == "in")
      await client.close()
      _ = refused
    }
  }

  @Test func connectionsBeyondTheLimitAreRefusedWithASentence() async throws {
    try await withControlServer { path in
      var held: [ControlClient] = []
      for _ in 0..<64 {
        let client = try await ControlClient.connect(path: path)
        _ = try await client.call(TestMethods.echo, EchoParams(text: "in"))
        held.append(client)
      }
      let extra = try await ControlClient.connect(path: path)
      await #expect {
        try await extra.call(TestMethods.echo, EchoParams(text: "one too many"))
      } throws: { error in
        guard let error = error as? ControlError else { return false }
        return error.kind == .busy && error.message.contains("64 control connections")
      }
      await extra.close()
      // A connection that goes makes room.
      await held.removeLast().close()
      var served = false
      for _ in 0..<100 where !served {
        if let client = try? await ControlClient.connect(path: path) {
          served = (try? await client.call(TestMethods.echo, EchoParams(text: "room"))) != nil
          await client.close()
        }
        if !served { try await Task.sleep(for: .milliseconds(20)) }
      }
      #expect(served)
      for client in held { await client.close() }
    }
  }

  @Test func aConnectionStuckInAPartialLineIsClosedAndAnIdleOneIsNot() async throws {
    try await withControlServer { path in
      let idle = try RawLineClient(path: path)
      idle.send(#"{"jsonrpc":"2.0","id":1,"method":"test.echo","params":{"text":"a"}}"# + "\n")
      #expect(field(await idle.readLine(), "result", "text") == "a")

      let stuck = try RawLineClient(path: path)
      stuck.send(#"{"jsonrpc":"2.0","id":1,"#)
      let begin = ContinuousClock.now
      // Product bound: partialLineTimeout (500 ms here) closes it; readLine sees EOF.
      #expect(await stuck.readLine() == nil)
      #expect(ContinuousClock.now - begin < .seconds(5))

      try await Task.sleep(for: .milliseconds(800))
      idle.send(#"{"jsonrpc":"2.0","id":2,"method":"test.echo","params":{"text":"b"}}"# + "\n")
      #expect(field(await idle.readLine(), "result", "text") == "b")
    }
  }

  @Test func aCallPastTheClientsTimeoutFailsAndTheConnectionIsKept() async throws {
    try await withControlServer { path in
      let client = try await ControlClient.connect(path: path)
      let begin = ContinuousClock.now
      await #expect {
        try await client.call(TestMethods.echo, EchoParams(text: "late", delayMs: 5_000), timeout: .milliseconds(200))
      } throws: { error in
        (error as? ControlError)?.kind == .timeout
      }
      // Product bound: the call's 200 ms timeout, measured on the client's event loop.
      #expect(ContinuousClock.now - begin < .seconds(3))
      #expect(try await client.call(TestMethods.echo, EchoParams(text: "next")).text == "next")
      await client.close()
    }
  }

  @Test func aLogsAnswerKeepsTheNewestLinesThatFitItsBudget() {
    let all = LogsResult.newest(["a", "b", "c"], id: "x")
    #expect(all == LogsResult(id: "x", lines: ["a", "b", "c"]))
    // Each line costs its JSON-escaped bytes plus 3 (quotes and comma); a control character six.
    let two = LogsResult.newest(["a", "b", "c"], id: "x", budget: 8)
    #expect(two == LogsResult(id: "x", lines: ["b", "c"], truncated: true, omittedLines: 1))
    #expect(LogsResult.newest(["\u{1B}"], id: "x", budget: 8).lines.isEmpty)
    #expect(LogsResult.newest(["\u{1B}"], id: "x", budget: 9).lines == ["\u{1B}"])
  }
}
