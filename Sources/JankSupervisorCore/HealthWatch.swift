import JankFrame
import JankProtocol
import NIOCore

/// A running series of periodic health checks on one plugin connection; `cancel` ends it.
struct HealthWatch: Sendable {
  let cancel: @Sendable () -> Void
}

extension PluginConnection {
  /// Checks health every `interval_ms`; after `failures` misses in a row, calls `onFailure`
  /// with the count and stops. The generic way: a task that sleeps between checks.
  func watchHealth(policy: PluginManifest.HealthPolicy, onFailure: @escaping @Sendable (Int) -> Void) -> HealthWatch {
    let task = Task {
      var misses = 0
      while !Task.isCancelled {
        try? await Task.sleep(for: .milliseconds(policy.intervalMs))
        if Task.isCancelled { return }
        let healthy = await healthCheck(timeout: .milliseconds(policy.timeoutMs))
        misses = healthy ? 0 : misses + 1
        if misses >= policy.failures {
          onFailure(misses)
          return
        }
      }
    }
    return HealthWatch { task.cancel() }
  }
}

/// Health checks of a jank-frame connection, driven by its event loop's own timers: a check
/// wakes one thread (the loop) instead of a timer thread, a pool thread and the loop, which
/// is most of what a thousand idle plugins cost the supervisor.
final class EventLoopHealthWatch: @unchecked Sendable {
  private let eventLoop: any EventLoop
  private let policy: PluginManifest.HealthPolicy
  private let check: (EventLoopPromise<Bool>) -> Void
  private let onFailure: @Sendable (Int) -> Void
  // Touched only on `eventLoop`.
  private var misses = 0
  private var next: Scheduled<Void>?
  private var cancelled = false

  /// `check` runs on the event loop and completes the promise with the plugin's health.
  init(
    eventLoop: any EventLoop, policy: PluginManifest.HealthPolicy, check: @escaping (EventLoopPromise<Bool>) -> Void,
    onFailure: @escaping @Sendable (Int) -> Void
  ) {
    self.eventLoop = eventLoop
    self.policy = policy
    self.check = check
    self.onFailure = onFailure
  }

  func start() -> HealthWatch {
    eventLoop.execute {
      // A random first delay spreads the checks of plugins started together.
      self.schedule(in: .milliseconds(Int64.random(in: Int64(self.policy.intervalMs / 2)...Int64(max(self.policy.intervalMs, 1)))))
    }
    return HealthWatch { [self] in
      eventLoop.execute {
        self.cancelled = true
        self.next?.cancel()
        self.next = nil
      }
    }
  }

  private func schedule(in delay: TimeAmount) {
    guard !cancelled else { return }
    next = eventLoop.scheduleTask(in: delay) { self.runCheck() }
  }

  private func runCheck() {
    guard !cancelled else { return }
    let promise = eventLoop.makePromise(of: Bool.self)
    check(promise)
    promise.futureResult.whenSuccess { healthy in
      guard !self.cancelled else { return }
      self.misses = healthy ? 0 : self.misses + 1
      if self.misses >= self.policy.failures {
        self.cancelled = true
        self.onFailure(self.misses)
      } else {
        self.schedule(in: .milliseconds(Int64(self.policy.intervalMs)))
      }
    }
  }
}
