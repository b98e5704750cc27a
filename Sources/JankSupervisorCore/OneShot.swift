import Synchronization

/// A value delivered once, awaited by any number of tasks (first delivery wins).
final class OneShot<Value: Sendable>: Sendable {
  private let state = Mutex<(value: Value?, waiters: [CheckedContinuation<Value, Never>])>((nil, []))

  func deliver(_ value: Value) {
    let waiters = state.withLock { state -> [CheckedContinuation<Value, Never>] in
      guard state.value == nil else { return [] }
      state.value = value
      defer { state.waiters = [] }
      return state.waiters
    }
    for waiter in waiters { waiter.resume(returning: value) }
  }

  /// The value if delivered (nil otherwise; an optional Value reads as `.some(nil)`).
  var peek: Value?? {
    state.withLock { state in state.value.map { .some($0) } }
  }

  var value: Value {
    get async {
      await withCheckedContinuation { continuation in
        let ready = state.withLock { state -> Value? in
          if let value = state.value { return value }
          state.waiters.append(continuation)
          return nil
        }
        if let ready { continuation.resume(returning: ready) }
      }
    }
  }
}
