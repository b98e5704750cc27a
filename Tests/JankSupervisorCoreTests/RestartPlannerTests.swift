@testable import JankSupervisorCore
import JankControl
import Testing

@Suite struct RestartPlannerTests {
  static func policy(_ mode: PluginManifest.RestartPolicy.Mode = .onFailure, initial: Int = 200, max: Int = 30_000, restarts: Int = 5, window: Int = 60) -> PluginManifest.RestartPolicy {
    var p = PluginManifest.RestartPolicy()
    p.policy = mode
    p.initialDelayMs = initial
    p.maxDelayMs = max
    p.maxRestarts = restarts
    p.windowSeconds = window
    return p
  }

  let t0 = ContinuousClock.now

  @Test func delayDoublesFromInitialUpToMax() {
    var planner = RestartPlanner(policy: Self.policy(initial: 200, max: 1_000, restarts: 100))
    var delays: [Duration] = []
    for i in 0..<6 {
      if case .restart(let d) = planner.processEnded(reason: .signaled, code: nil, uptime: .seconds(1), now: t0 + .seconds(i), jitter: 0) {
        delays.append(d)
      }
    }
    #expect(delays == [.milliseconds(200), .milliseconds(400), .milliseconds(800), .milliseconds(1_000), .milliseconds(1_000), .milliseconds(1_000)])
  }

  @Test func jitterStaysWithinTwentyPercent() {
    var planner = RestartPlanner(policy: Self.policy(initial: 1_000))
    #expect(planner.processEnded(reason: .exited, code: 1, uptime: nil, now: t0, jitter: 1) == .restart(after: .milliseconds(1_200)))
    var other = RestartPlanner(policy: Self.policy(initial: 1_000))
    #expect(other.processEnded(reason: .exited, code: 1, uptime: nil, now: t0, jitter: -1) == .restart(after: .milliseconds(800)))
  }

  @Test func aStableRunResetsTheBackoff() {
    var planner = RestartPlanner(policy: Self.policy(initial: 100, restarts: 100))
    _ = planner.processEnded(reason: .signaled, code: nil, uptime: .seconds(1), now: t0, jitter: 0)
    _ = planner.processEnded(reason: .signaled, code: nil, uptime: .seconds(1), now: t0 + .seconds(1), jitter: 0)
    #expect(planner.consecutiveFailures == 2)
    let after = planner.processEnded(reason: .signaled, code: nil, uptime: .seconds(61), now: t0 + .seconds(70), jitter: 0)
    #expect(after == .restart(after: .milliseconds(100)))
    #expect(planner.consecutiveFailures == 1)
  }

  /// What the plugin's info shows: the count reads 0 once the current process has been up
  /// for the stable uptime, before any next crash clears it in the planner.
  @Test func consecutiveFailuresReadAsResetAfterAStableUptime() {
    var planner = RestartPlanner(policy: Self.policy(initial: 100, max: 1_000, restarts: 100))
    _ = planner.processEnded(reason: .signaled, code: nil, uptime: .seconds(1), now: t0, jitter: 0)
    _ = planner.processEnded(reason: .exited, code: 2, uptime: nil, now: t0 + .seconds(1), jitter: 0)
    #expect(planner.consecutiveFailures(upFor: nil) == 2, "in backoff, no process")
    #expect(planner.consecutiveFailures(upFor: .seconds(59)) == 2)
    #expect(planner.consecutiveFailures(upFor: .seconds(60)) == 0)
    // A long max_delay_ms stretches the stable uptime.
    var slow = RestartPlanner(policy: Self.policy(initial: 100, max: 120_000, restarts: 100))
    _ = slow.processEnded(reason: .signaled, code: nil, uptime: nil, now: t0, jitter: 0)
    #expect(slow.consecutiveFailures(upFor: .seconds(90)) == 1)
    #expect(slow.consecutiveFailures(upFor: .seconds(120)) == 0)
    // Reading changes nothing: the next crash after a stable run starts the backoff over.
    #expect(planner.processEnded(reason: .signaled, code: nil, uptime: .seconds(61), now: t0 + .seconds(70), jitter: 0) == .restart(after: .milliseconds(100)))
    #expect(planner.consecutiveFailures(upFor: nil) == 1)
  }

  @Test func tooManyRestartsWithinTheWindowGiveUp() {
    var planner = RestartPlanner(policy: Self.policy(restarts: 3, window: 10))
    for i in 0..<3 {
      guard case .restart = planner.processEnded(reason: .healthFailed, code: nil, uptime: nil, now: t0 + .seconds(i), jitter: 0) else {
        Issue.record("restart \(i) refused")
        return
      }
    }
    guard case .giveUp(let why) = planner.processEnded(reason: .healthFailed, code: nil, uptime: nil, now: t0 + .seconds(3), jitter: 0) else {
      Issue.record("a fourth restart within 10 s was allowed")
      return
    }
    #expect(why.contains("max_restarts 3"))
    // Once the window has passed, restarts are allowed again; an operator reset also clears it.
    #expect(planner.processEnded(reason: .healthFailed, code: nil, uptime: nil, now: t0 + .seconds(11), jitter: 0) != .stop)
    planner.reset()
    #expect(planner.consecutiveFailures == 0)
  }

  @Test func policiesDecideWhatACleanExitMeans() {
    var onFailure = RestartPlanner(policy: Self.policy(.onFailure))
    #expect(onFailure.processEnded(reason: .exited, code: 0, uptime: nil, now: t0, jitter: 0) == .stop)
    var always = RestartPlanner(policy: Self.policy(.always))
    #expect(always.processEnded(reason: .exited, code: 0, uptime: nil, now: t0, jitter: 0) == .restart(after: .milliseconds(200)))
    var never = RestartPlanner(policy: Self.policy(.never))
    #expect(never.processEnded(reason: .exited, code: 0, uptime: nil, now: t0, jitter: 0) == .stop)
    guard case .giveUp = never.processEnded(reason: .signaled, code: nil, uptime: nil, now: t0, jitter: 0) else {
      Issue.record("policy never restarted a crash")
      return
    }
  }
}
