import NIOPosix

/// File-system work that can take long — walking a plugin folder, hashing its sources —
/// runs on threads of its own, never on an actor or Swift's cooperative pool: a plugin
/// folder holding a 2 GB file (or on a slow mount) must not hold control calls, other
/// plugins' starts or the watchdog ping behind it. Not Dispatch's global queues either:
/// their worker threads are as many as the cores, and tiny scans waited 0.9 s there behind
/// other blocking work under load.
enum BlockingIO {
  private static let pool: NIOThreadPool = {
    let pool = NIOThreadPool(numberOfThreads: 4)
    pool.start()
    return pool
  }()

  static func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    // The pool is never shut down, so it is always active; should it not be, run here.
    (try? await pool.runIfActive(body)) ?? body()
  }
}
