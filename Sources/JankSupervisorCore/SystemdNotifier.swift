import CSystemd
import Glibc
import Synchronization

/// Talks to systemd through libsystemd's `sd_notify` (design §8): READY once the control
/// socket listens and auto-start plugins were attempted, STATUS with plugin counts, WATCHDOG
/// while the supervisor's own loop answers, STOPPING on shutdown. Every call is a no-op when
/// not started by systemd (`NOTIFY_SOCKET` unset).
public struct SystemdNotifier: Sendable {
  public init() {}

  public var isEnabled: Bool { getenv("NOTIFY_SOCKET") != nil }

  /// Half the `WatchdogSec=` systemd asked for (its recommendation), or nil when off.
  public var watchdogInterval: Duration? {
    var microseconds: UInt64 = 0
    guard sd_watchdog_enabled(0, &microseconds) > 0, microseconds > 0 else { return nil }
    return .microseconds(Int64(microseconds / 2))
  }

  /// Set once READY=1 was sent: start-up is over for systemd.
  private static let startedUp = Atomic<Bool>(false)

  public func ready(status: String) {
    Self.startedUp.store(true, ordering: .relaxed)
    send("READY=1\nSTATUS=\(status)")
  }
  public func status(_ status: String) { send("STATUS=\(status)") }
  public func watchdog() { send("WATCHDOG=1") }
  public func stopping() { send("STOPPING=1\nSTATUS=stopping plugins") }

  /// Before READY=1, asks systemd to wait `duration` more from now before it gives up on
  /// the start-up: a build of an auto-start plugin may take up to its `build_timeout_s`, far
  /// past the default `TimeoutStartSec=`. Does nothing once started up.
  public func extendStartTimeout(by duration: Duration) {
    guard !Self.startedUp.load(ordering: .relaxed) else { return }
    let (seconds, attoseconds) = duration.components
    send("EXTEND_TIMEOUT_USEC=\(seconds * 1_000_000 + attoseconds / 1_000_000_000_000)")
  }

  private func send(_ state: String) {
    guard isEnabled else { return }
    _ = sd_notify(0, state)
  }
}
