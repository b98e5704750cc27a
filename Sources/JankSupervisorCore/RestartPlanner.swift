import JankControl

/// What happens after a plugin's process ended without being asked to (design §8): restart
/// after an exponential, jittered delay, stop for good, or give up with `error` when restarts
/// come too often (OTP's intensity rule). Pure logic with an injected clock and jitter, so
/// every rule is tested deterministically.
struct RestartPlanner {
  enum Decision: Equatable {
    case restart(after: Duration)
    /// The plugin ended cleanly and its policy does not restart it.
    case stop
    /// Too many restarts, or a failure under policy `never`: `error` with this sentence.
    case giveUp(String)
  }

  let policy: PluginManifest.RestartPolicy
  private(set) var consecutiveFailures = 0
  private var recentRestarts: [ContinuousClock.Instant] = []

  init(policy: PluginManifest.RestartPolicy) {
    self.policy = policy
  }

  /// A plugin that stayed up this long is healthy again: its backoff starts over.
  var stableUptime: Duration {
    max(.milliseconds(policy.maxDelayMs), .seconds(60))
  }

  /// `consecutive_failures` as the plugin's info shows it: a process up for `stableUptime`
  /// has reset the count, even though the planner itself only clears it at the next exit.
  /// - Parameter uptime: how long the current process has been up (nil when none runs).
  func consecutiveFailures(upFor uptime: Duration?) -> Int {
    if let uptime, uptime >= stableUptime { return 0 }
    return consecutiveFailures
  }

  /// - Parameters:
  ///   - uptime: how long the process had been ready (nil when it never got ready).
  ///   - jitter: a number in -1...1; the delay varies by up to ±20 % of the backoff.
  mutating func processEnded(
    reason: LastExit.Reason, code: Int?, uptime: Duration?, now: ContinuousClock.Instant, jitter: Double
  ) -> Decision {
    if let uptime, uptime >= stableUptime { consecutiveFailures = 0 }
    let clean = reason == .exited && code == 0
    switch policy.policy {
    case .never:
      return clean ? .stop : .giveUp("the plugin ended (\(reason.rawValue)) and its restart policy is never")
    case .onFailure where clean:
      return .stop
    case .onFailure, .always:
      break
    }
    consecutiveFailures += 1
    let window = Duration.seconds(policy.windowSeconds)
    recentRestarts.removeAll { $0 + window <= now }
    guard recentRestarts.count < policy.maxRestarts else {
      return .giveUp(
        "restarted \(recentRestarts.count) times within \(policy.windowSeconds) s (max_restarts \(policy.maxRestarts)); "
          + "fix the plugin, then `jankctl start` it")
    }
    recentRestarts.append(now)
    return .restart(after: delay(jitter: jitter))
  }

  /// initial_delay_ms doubled per consecutive failure, capped at max_delay_ms, ±20 %.
  func delay(jitter: Double) -> Duration {
    let exponent = min(max(consecutiveFailures - 1, 0), 30)
    let base = min(Double(policy.initialDelayMs) * Double(1 << exponent), Double(policy.maxDelayMs))
    let jittered = base * (1 + 0.2 * min(max(jitter, -1), 1))
    return .milliseconds(Int64(max(jittered, 0).rounded()))
  }

  /// An operator's start or restart: the count begins anew.
  mutating func reset() {
    consecutiveFailures = 0
    recentRestarts = []
  }
}
