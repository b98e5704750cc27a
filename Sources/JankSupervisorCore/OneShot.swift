import Synchronization

/// A value delivered once, awaited by any number of tasks (first delivery wins).
/// Waiting is cancellable, so a task group racing it against a timeout can finish.
final class OneShot<Value: Sendable>: Sendable {
  private struct State {
    var value: Value?
    var nextID = 0
    var waiters: [Int: CheckedContinuation<Value?, Never>] = [:]
  }

  private let state = Mutex(State())

  func deliver(_ value: Value) {
    let waiters = state.withLock { state -> [CheckedContinuation<Value?, Never>] in
      guard state.value == nil else { return [] }
      state.value = value
      defer { state.waiters = [:] }
      return Array(state.waiters.values)
    }
    for waiter in waiters { waiter.resume(returning: value) }
  }

  var isDelivered: Bool { state.withLock { $0.value != nil } }

  /// The value, or nil if the waiting task was cancelled first.
  func wait() async -> Value? {
    let id = state.withLock { state -> Int in
      state.nextID += 1
      return state.nextID
    }
    return await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Value?, Never>) in
        let ready = state.withLock { state -> (done: Bool, value: Value?) in
          if let value = state.value { return (true, value) }
          if Task.isCancelled { return (true, nil) }
          state.waiters[id] = continuation
          return (false, nil)
        }
        if ready.done { continuation.resume(returning: ready.value) }
      }
    } onCancel: {
      let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
      waiter?.resume(returning: nil)
    }
  }

  /// The value, or nil if `deadline` passes (or the task is cancelled) first.
  func wait(until deadline: ContinuousClock.Instant) async -> Value? {
    await withTaskGroup(of: Value?.self) { group in
      group.addTask { await self.wait() }
      group.addTask {
        try? await Task.sleep(until: deadline)
        return nil
      }
      let first = await group.next()!
      group.cancelAll()
      return first
    }
  }
}
