import Foundation
import JankControl
import Testing

/// What every hostile-input case checks once the input is dealt with: the supervisor still
/// answers a normal `get` and `execute` of another plugin within a second, and its memory
/// grew by less than `boundKB`.
func expectStillServing(
  _ client: ControlClient, _ id: String, supervisor pid: pid_t, rssBeforeKB: Int, boundKB: Int = 64 * 1024,
  sourceLocation: SourceLocation = #_sourceLocation
) async throws {
  let begin = ContinuousClock.now
  let info = try await client.call(ControlMethods.get, PluginIDParams(id: id), timeout: .seconds(5))
  let result = try await client.call(ControlMethods.execute, ExecuteParams(id: id, method: "greet", args: ["name": "Ada"]), timeout: .seconds(5))
  // Product bound: a get and an execute are milliseconds; nothing hostile is left holding them.
  #expect(ContinuousClock.now - begin < .seconds(1), "get + execute took \(ContinuousClock.now - begin)", sourceLocation: sourceLocation)
  #expect(info.status == .ready, sourceLocation: sourceLocation)
  #expect(result.data["message"] == "Hello, Ada!", sourceLocation: sourceLocation)
  let after = try #require(residentKB(pid), sourceLocation: sourceLocation)
  #expect(after - rssBeforeKB < boundKB, "supervisor RSS \(rssBeforeKB) kB → \(after) kB", sourceLocation: sourceLocation)
}
