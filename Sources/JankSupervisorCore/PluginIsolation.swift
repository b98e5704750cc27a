import Foundation
import Glibc
import JankControl
import Synchronization

/// How plugins are kept apart from the supervisor and from each other. With a uid of its own,
/// a plugin cannot signal or ptrace the supervisor or a sibling, read the state file, or write
/// its cgroup's limits (all of those belong to the supervisor's user).
public enum IsolationMode: Sendable, Equatable {
  /// Each plugin runs as a uid (and gid of the same number) of its own from `range`.
  case uid(range: ClosedRange<UInt32>)
  /// Plugins run as the supervisor's user; the sentence says why.
  case none(reason: String)

  /// systemd's DynamicUser range, which no account or package uses.
  public static let defaultRange: ClosedRange<UInt32> = 61_184...65_519

  /// What a supervisor needs to run plugins as other users: change uid and gid, give each
  /// plugin its socket folder (chown), stop processes of other users (kill), and copy sources
  /// into and the output out of a build's folder, which is the plugin's (dac_override).
  static let neededCapabilities: [(bit: Int, name: String)] = [(0, "CAP_CHOWN"), (1, "CAP_DAC_OVERRIDE"), (5, "CAP_KILL"), (6, "CAP_SETGID"), (7, "CAP_SETUID")]

  /// uid mode when the supervisor has the capabilities (root has them all); `range` nil
  /// turns it off.
  public static func detect(range: ClosedRange<UInt32>?) -> IsolationMode {
    guard let range else {
      return .none(reason: "--plugin-uid-range is off, so plugins run as the supervisor's user (uid \(geteuid())) and can read and write what it can; " + signals)
    }
    let effective = effectiveCapabilities()
    let missing = neededCapabilities.filter { effective & (1 << UInt64($0.bit)) == 0 }.map(\.name)
    guard missing.isEmpty else {
      return .none(
        reason: "the supervisor runs as uid \(geteuid()) without \(missing.joined(separator: ", ")), so plugins run as its user and can read and write what it can; "
          + signals + "; run it as root, or grant CAP_SETUID CAP_SETGID CAP_CHOWN CAP_KILL CAP_DAC_OVERRIDE (deploy/jank-supervisor.service does)")
    }
    return .uid(range: range)
  }

  /// What the same uid still does not give a plugin, or why it does.
  private static var signals: String {
    if let missing = SignalConfinement.unavailableReason {
      return "they can also signal and trace it and each other, as \(missing)"
    }
    // Landlock's ptrace check yields to CAP_SYS_PTRACE, which a root supervisor's plugins keep.
    if geteuid() == 0 {
      return "Landlock keeps them from signalling it and each other, but as root they can still trace it"
    }
    return "Landlock keeps them from signalling or tracing it and each other"
  }

  /// "61184-65519" (or "off") as `--plugin-uid-range` takes it.
  public static func parseRange(_ text: String) -> ClosedRange<UInt32>?? {
    if text == "off" || text == "none" { return .some(nil) }
    let parts = text.split(separator: "-", omittingEmptySubsequences: false)
    guard parts.count == 2, let low = UInt32(parts[0]), let high = UInt32(parts[1]), low >= 1000, low <= high, high < UInt32.max else { return nil }
    return .some(low...high)
  }

  public var name: String {
    switch self {
    case .uid: "uid"
    case .none: "none"
    }
  }

  private static func effectiveCapabilities() -> UInt64 {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }) else { return 0 }
    return UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16) ?? 0
  }
}

/// Which uid each registered plugin runs as. Stable: a plugin keeps the uid its registration
/// recorded in the state file, and a new plugin starts looking at a place fixed by its id, so
/// files a plugin made under one uid are still its own after a supervisor restart. Released
/// on unregister.
final class PluginUIDs: Sendable {
  let range: ClosedRange<UInt32>
  private let assigned = Mutex<[String: UInt32]>([:])

  init(range: ClosedRange<UInt32>) {
    self.range = range
  }

  /// The plugin's uid: the one it has, the `recorded` one when it is free, or the first free
  /// uid from its id's place in the range that no account uses. nil when the range is full.
  func assign(id: String, recorded: UInt32? = nil) -> UInt32? {
    assigned.withLock { assigned in
      if let uid = assigned[id] { return uid }
      let used = Set(assigned.values)
      if let recorded, range.contains(recorded), !used.contains(recorded) {
        assigned[id] = recorded
        return recorded
      }
      let count = UInt64(range.count)
      let start = Self.fnv1a(id) % count
      for step in 0..<count {
        let uid = range.lowerBound + UInt32((start + step) % count)
        guard !used.contains(uid), !Self.isAccount(uid) else { continue }
        assigned[id] = uid
        return uid
      }
      return nil
    }
  }

  func release(id: String) {
    assigned.withLock { _ = $0.removeValue(forKey: id) }
  }

  func uid(of id: String) -> UInt32? {
    assigned.withLock { $0[id] }
  }

  private static func fnv1a(_ text: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 {
      hash ^= UInt64(byte)
      hash = hash &* 0x100_0000_01b3
    }
    return hash
  }

  /// A uid /etc/passwd (or NSS) names belongs to someone else.
  private static func isAccount(_ uid: UInt32) -> Bool {
    var entry = passwd()
    var result: UnsafeMutablePointer<passwd>?
    var buffer = [CChar](repeating: 0, count: 4096)
    return getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0 && result != nil
  }
}

/// The user a plugin runs as in uid isolation (its gid has the same number).
struct PluginIdentity: Sendable, Equatable {
  var uid: uid_t
  var gid: gid_t { uid }
}

/// Who each plugin runs as: the isolation mode found at start and, in uid mode, each
/// registered plugin's uid. The supervisor asks here when it makes a runner and tells it when
/// a plugin's processes are gone for good.
final class PluginPrincipals: Sendable {
  let mode: IsolationMode
  private let uids: PluginUIDs?

  init(mode: IsolationMode) {
    self.mode = mode
    if case .uid(let range) = mode { uids = PluginUIDs(range: range) } else { uids = nil }
  }

  /// The plugin's identity (nil: the supervisor's user) and, without one, the sentence why.
  /// `recorded` is the uid its registration had in the state file.
  func principal(for id: String, recorded: UInt32? = nil) throws(ControlError) -> (identity: PluginIdentity?, note: String?) {
    switch mode {
    case .uid(let range):
      guard let uid = uids?.assign(id: id, recorded: recorded) else {
        throw ControlError(
          .unavailable,
          "every uid of --plugin-uid-range \(range.lowerBound)-\(range.upperBound) is taken by a registered plugin or an account; unregister a plugin or give a wider range",
          details: ["id": .string(id)])
      }
      return (PluginIdentity(uid: uid), nil)
    case .none(let reason):
      return (nil, reason)
    }
  }

  /// Only once the plugin's processes are gone: a uid given to another plugin meanwhile
  /// would let that plugin signal what is left of this one.
  func release(id: String) {
    uids?.release(id: id)
  }

  /// Whether `uid` is one plugins run as (the control socket refuses those).
  func isPluginUID(_ uid: uid_t) -> Bool {
    if case .uid(let range) = mode { return range.contains(uid) }
    return false
  }
}
