import Glibc
import Synchronization

/// A server of many connections needs more descriptors than the 1024 a login shell (or a
/// unit without LimitNOFILE=) grants as the soft limit; the hard limit is usually far
/// higher. The servers raise their own soft limit to the hard one at start, and give every
/// child back the soft limit they were started with: a plugin or build that uses select(2)
/// breaks on descriptors past 1024 (systemd's advice, systemd.exec(5) LimitNOFILE=).
public enum OpenFilesLimit {
  private static let inherited = Mutex<rlimit?>(nil)

  /// Raises the soft limit to the hard one; returns the new soft limit.
  @discardableResult
  public static func raiseToHardLimit() -> UInt64 {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
    inherited.withLock { if $0 == nil { $0 = limit } }
    var raised = limit
    raised.rlim_cur = limit.rlim_max
    return setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 ? UInt64(raised.rlim_cur) : UInt64(limit.rlim_cur)
  }

  /// The soft and hard limit a child gets unless its own limits say otherwise: what this
  /// process was started with (nil when it never raised its own).
  static var forChildren: (soft: UInt64, hard: UInt64)? {
    inherited.withLock { $0.map { (UInt64($0.rlim_cur), UInt64($0.rlim_max)) } }
  }
}
