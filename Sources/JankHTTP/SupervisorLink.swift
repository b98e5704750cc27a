import JankControl
import Logging
import Synchronization

/// jank-api's way to the supervisor: a few long-lived control connections shared by all
/// requests (calls are pipelined on each), reconnected on demand with backoff. While the
/// supervisor is away every call fails at once with 503 instead of waiting; the first call
/// after the backoff reconnects, so the API recovers by itself.
public final class SupervisorLink: Sendable {
  public let socketPath: String
  private let size: Int
  private let logger: Logger
  private let state: Mutex<State>

  private struct State {
    var clients: [ControlClient?]
    var connecting: [Task<ControlClient, any Error>?]
    var next = 0
    var failures = 0
    var retryAt: ContinuousClock.Instant?
  }

  public init(socketPath: String, connections: Int = 2, logger: Logger) {
    self.socketPath = socketPath
    self.size = max(connections, 1)
    self.logger = logger
    self.state = Mutex(State(clients: Array(repeating: nil, count: max(connections, 1)), connecting: Array(repeating: nil, count: max(connections, 1))))
  }

  /// Calls the supervisor; an unreachable supervisor is a 503 `APIError`, its own errors are
  /// `ControlError`s.
  /// `timeout` bounds the wait for the answer (504 past it): jank-api never holds a request,
  /// and its connection, on a supervisor that does not answer.
  public func call<Params, Result>(_ method: ControlMethod<Params, Result>, _ params: Params, timeout: Duration) async throws -> Result {
    let client = try await client()
    do {
      return try await client.call(method, params, timeout: timeout)
    } catch let error as ControlError where error.details["unreachable"] == .bool(true) {
      throw unreachable(error.details["reason"]?.stringValue ?? error.message)
    }
  }

  public var isConnected: Bool {
    state.withLock { $0.clients.contains { $0?.isConnected == true } }
  }

  private enum Pick {
    case ready(ControlClient)
    case wait(Task<ControlClient, any Error>)
    case backingOff(Duration)
  }

  private func client() async throws -> ControlClient {
    let pick = state.withLock { state -> Pick in
      let slot = state.next % size
      state.next &+= 1
      if let client = state.clients[slot], client.isConnected { return .ready(client) }
      if let task = state.connecting[slot] { return .wait(task) }
      let now = ContinuousClock.now
      if let retryAt = state.retryAt, now < retryAt { return .backingOff(now.duration(to: retryAt)) }
      let path = socketPath
      let task = Task { try await ControlClient.connect(path: path) }
      state.connecting[slot] = task
      // Whoever connects records the outcome.
      Task { await self.record(task, slot: slot) }
      return .wait(task)
    }
    switch pick {
    case .ready(let client):
      return client
    case .backingOff(let wait):
      throw unreachable("the last attempt to reach it failed; retrying in \(Int(wait.components.seconds * 1000 + wait.components.attoseconds / 1_000_000_000_000_000)) ms")
    case .wait(let task):
      do {
        return try await task.value
      } catch let error as ControlError {
        throw unreachable(error.details["reason"]?.stringValue ?? error.message)
      }
    }
  }

  private func record(_ task: Task<ControlClient, any Error>, slot: Int) async {
    let result = await task.result
    state.withLock { state in
      state.connecting[slot] = nil
      switch result {
      case .success(let client):
        state.clients[slot] = client
        state.failures = 0
        state.retryAt = nil
      case .failure:
        state.failures += 1
        // 50 ms doubling to 2 s: quick to recover, never a connect storm.
        let delay = min(50 * (1 << min(state.failures - 1, 6)), 2000)
        state.retryAt = .now + .milliseconds(delay)
      }
    }
    if case .success = result { logger.info("connected to the supervisor", metadata: ["socket": "\(socketPath)", "slot": "\(slot)"]) }
  }

  private func unreachable(_ reason: String) -> APIError {
    APIError(ControlError(
      .unavailable,
      "the supervisor is unreachable at \(socketPath) (\(reason)); jank-api reconnects by itself once it is back: start or check jank-supervisor",
      details: ["supervisor_socket": .string(socketPath)]))
  }
}
