import Dispatch

/// File-system work that can take long — walking a plugin folder, hashing its sources —
/// runs on threads of its own, never on an actor or Swift's cooperative pool: a plugin
/// folder holding a 2 GB file (or on a slow mount) must not hold control calls, other
/// plugins' starts or the watchdog ping behind it.
enum BlockingIO {
  private static let queue = DispatchQueue(label: "jank.blocking-io", attributes: .concurrent)

  static func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
      queue.async { continuation.resume(returning: body()) }
    }
  }
}
