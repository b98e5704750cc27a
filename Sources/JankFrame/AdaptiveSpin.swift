import Glibc

/// Busy-polls a socket for a short while instead of letting its event loop sleep, when the
/// next frame is expected within microseconds.
///
/// Why: on this kind of machine (a 2-vCPU VM) a sleeping peer is woken by an inter-processor
/// interrupt that exits to the hypervisor; that costs the writer ~15–20 µs of kernel time and
/// the sleeper as much again, which is most of a jank-frame round trip (BENCHMARKS.md). A
/// thread that polls instead of sleeping needs no wake-up. The spin is adaptive, so only
/// back-to-back traffic pays for it: it is tried while recent waits came back within twice
/// the budget, it never lasts longer than the budget, and it yields the CPU to any other
/// thread that is ready to run.
///
/// A wait measured without spinning includes the wake-up the spin would have saved, so on a
/// slow host it can exceed twice the budget even for back-to-back traffic, and "not worth it"
/// would then prove itself forever. So while it is off, every `probeInterval`-th wait spins
/// anyway: a probe that sees the frame within the budget turns spinning back on.
public struct AdaptiveSpin: Sendable {
  /// The longest one spin lasts.
  public var budgetNanoseconds: UInt64
  /// While spinning is off, one wait in this many spins anyway, to find out whether it pays again.
  public static let probeInterval: UInt32 = 16
  /// The last observed wait (send to answer, or answer to next request), in nanoseconds.
  private var lastWait: UInt64 = 0
  private var waitsSinceProbe: UInt32 = 0

  public init(budgetMicroseconds: UInt64 = 100) {
    budgetNanoseconds = budgetMicroseconds * 1000
  }

  /// Spinning is disabled when the environment says `JANK_FRAME_SPIN_US=0`.
  public static func fromEnvironment() -> AdaptiveSpin? {
    guard let raw = getenv("JANK_FRAME_SPIN_US") else { return AdaptiveSpin() }
    guard let micros = UInt64(String(cString: raw)), micros > 0 else { return nil }
    return AdaptiveSpin(budgetMicroseconds: micros)
  }

  /// Whether recent waits were short enough to spin for.
  public var isWorthIt: Bool { lastWait < 2 * budgetNanoseconds }

  /// Whether to spin for the wait that starts now: when it is worth it, or as a probe.
  public mutating func shouldSpin() -> Bool {
    if isWorthIt {
      waitsSinceProbe = 0
      return true
    }
    waitsSinceProbe &+= 1
    guard waitsSinceProbe >= Self.probeInterval else { return false }
    waitsSinceProbe = 0
    return true
  }

  public mutating func record(waitNanoseconds: UInt64) { lastWait = waitNanoseconds }

  /// Polls `fd` for readability without blocking until it is readable or the budget is
  /// spent; returns whether it became readable. The event loop then finds it ready.
  public func spin(untilReadable fd: CInt) -> Bool {
    var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    let end = Self.now() &+ budgetNanoseconds
    var round = 0
    repeat {
      if poll(&pfd, 1, 0) > 0 { return true }
      // Polite: a thread that is ready to run on this CPU (the API, the plugin, the load
      // generator) gets it first; on an otherwise idle CPU this returns at once. Not every
      // round, so that an answer is still noticed within a microsecond or so.
      round &+= 1
      if round & 15 == 0 { sched_yield() }
    } while Self.now() < end
    return false
  }

  /// CLOCK_MONOTONIC in nanoseconds (vDSO, no system call).
  public static func now() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
  }
}
