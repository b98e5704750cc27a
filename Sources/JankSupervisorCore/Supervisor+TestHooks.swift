import Foundation
import Glibc

/// Hooks that tests (and jank-supervisor's JANK_TEST_STALL_ON_SIGUSR1) use to put the engine
/// into states that are otherwise a matter of luck; kept apart from the control operations.
extension Supervisor {
  /// Blocks the supervisor actor (a test hook for the watchdog; see jank-supervisor's
  /// JANK_TEST_STALL_ON_SIGUSR1).
  public func stallForTesting(_ duration: Duration) {
    Thread.sleep(forTimeInterval: duration.seconds)
  }

  /// Test hook: runs `hook` after any call to plugin `id` finished waiting for it to be
  /// ready, with the pid of the process it found (see `PluginRunner.afterReadinessWait`).
  public func afterReadinessWaitForTesting(id: String, _ hook: (@Sendable (pid_t?) async -> Void)?) async throws {
    try await runner(id).setAfterReadinessWait(hook)
  }
}
