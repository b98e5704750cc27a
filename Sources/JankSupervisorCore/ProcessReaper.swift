import CJankShim
import Foundation
import Glibc
import Synchronization

/// How a child process ended.
public enum ExitStatus: Sendable, Equatable, CustomStringConvertible {
  case exited(Int32)
  case signaled(Int32)

  public var description: String {
    switch self {
    case .exited(let code): "exited with code \(code)"
    case .signaled(let signal): "was killed by signal \(signal) (\(Self.signalName(signal)))"
    }
  }

  static func signalName(_ signal: Int32) -> String {
    guard let name = strsignal(signal) else { return "SIG\(signal)" }
    return String(cString: name)
  }
}

/// Reaps our own children, and only them: one pidfd per child, watched by one epoll thread.
/// (A `waitpid(-1)` loop would steal the exit status of processes other libraries spawn.)
public final class ProcessReaper: Sendable {
  public static let shared = ProcessReaper()

  private struct Watch {
    var pidfd: Int32
    var waiters: [Int: CheckedContinuation<ExitStatus?, Never>] = [:]
  }

  private struct State {
    var watches: [pid_t: Watch] = [:]
    var exited: [pid_t: ExitStatus] = [:]
    var nextWaiterID = 0
  }

  private let epollFD: Int32
  private let state = Mutex(State())

  private init() {
    epollFD = jank_epoll_create()
    precondition(epollFD >= 0, "epoll_create1 failed: \(errno)")
    let thread = Thread { [self] in loop() }
    thread.start()
  }

  /// Starts watching a freshly spawned child. Must be called before anyone waits on it.
  public func watch(pid: pid_t) {
    let pidfd = jank_pidfd_open(pid)
    if pidfd < 0 {
      // Only possible if the pid is already gone, which cannot happen for an unreaped child.
      reap(pid: pid, pidfd: -1)
      return
    }
    _ = fcntl(pidfd, F_SETFD, FD_CLOEXEC)
    state.withLock { $0.watches[pid] = Watch(pidfd: pidfd) }
    _ = jank_epoll_watch_pidfd(epollFD, pidfd, pid)
  }

  /// Waits for the child to exit (returns at once if it already did).
  public func waitForExit(pid: pid_t) async -> ExitStatus {
    await waitForExit(pid: pid, within: nil) ?? .exited(-1)
  }

  /// Waits at most `timeout` for the child to exit; nil if it is still running then.
  public func waitForExit(pid: pid_t, within timeout: Duration?) async -> ExitStatus? {
    await withCheckedContinuation { (continuation: CheckedContinuation<ExitStatus?, Never>) in
      let registered = state.withLock { state -> (done: ExitStatus?, id: Int?) in
        if let status = state.exited[pid] { return (status, nil) }
        guard state.watches[pid] != nil else { return (.exited(-1), nil) }  // not ours
        state.nextWaiterID += 1
        state.watches[pid]!.waiters[state.nextWaiterID] = continuation
        return (nil, state.nextWaiterID)
      }
      if let done = registered.done {
        continuation.resume(returning: done)
        return
      }
      guard let timeout, let id = registered.id else { return }
      Task {
        try? await Task.sleep(for: timeout)
        let waiter = self.state.withLock { $0.watches[pid]?.waiters.removeValue(forKey: id) }
        waiter?.resume(returning: nil)
      }
    }
  }

  /// Forgets a reaped child's status once nobody will ask again.
  public func forget(pid: pid_t) {
    _ = state.withLock { $0.exited.removeValue(forKey: pid) }
  }

  private func loop() {
    var pids = [pid_t](repeating: 0, count: 64)
    while true {
      let n = jank_epoll_wait_pids(epollFD, &pids, Int32(pids.count))
      if n < 0 { continue }
      for pid in pids.prefix(Int(n)) {
        let pidfd = state.withLock { $0.watches[pid]?.pidfd ?? -1 }
        reap(pid: pid, pidfd: pidfd)
      }
    }
  }

  private func reap(pid: pid_t, pidfd: Int32) {
    var status: Int32 = 0
    var result: pid_t
    repeat { result = waitpid(pid, &status, 0) } while result < 0 && errno == EINTR
    let exit: ExitStatus
    if result < 0 {
      exit = .exited(-1)
    } else if (status & 0x7f) == 0 {
      exit = .exited((status >> 8) & 0xff)
    } else {
      exit = .signaled(status & 0x7f)
    }
    if pidfd >= 0 {
      _ = jank_epoll_unwatch(epollFD, pidfd)
      close(pidfd)
    }
    let waiters = state.withLock { state -> [CheckedContinuation<ExitStatus?, Never>] in
      let waiters = state.watches.removeValue(forKey: pid)?.waiters.values.map { $0 } ?? []
      state.exited[pid] = exit
      return waiters
    }
    for waiter in waiters { waiter.resume(returning: exit) }
  }
}
