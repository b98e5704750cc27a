import Glibc
import JankFrame
import JankProtocol
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Serves a plugin over jank-frame (docs/jank-frame.md) on a Unix socket: the fast path a
/// Jank host negotiates. Each connection's frames are read, and its calls run, on that
/// connection's own thread (`FrameConnection`); calls are multiplexed by id and may finish
/// in any order.
///
/// Not generic over the plugin type: the SDK is a separate module from the plugin, so generic
/// code here would run unspecialized, looking up type metadata on every call.
struct FrameServer: Sendable {
  let plugin: any Plugin
  let shutdown: ShutdownSignal
  let logger: Logger
  var maxPayloadLength = Frame.defaultMaxPayloadLength
  /// Calls in flight across all connections, so that a shutdown can let them finish.
  let inFlight: InFlightCounter

  init(plugin: any Plugin, shutdown: ShutdownSignal, logger: Logger) {
    self.plugin = plugin
    self.shutdown = shutdown
    self.logger = logger
    inFlight = InFlightCounter(shutdown: shutdown)
  }

  /// Serves every connection the listener accepts, until it is closed.
  func run(_ listener: FrameListener) async {
    await withDiscardingTaskGroup { group in
      for await fd in listener.connections() {
        let calls = CallsInFlight()
        let connection: FrameConnection
        do {
          connection = try FrameConnection.start(fd: fd, maxPayloadLength: maxPayloadLength) { calls.cancel($0) }
        } catch {
          logger.warning("jank-frame connection could not be set up", metadata: ["error": "\(error)"])
          Glibc.close(fd)
          continue
        }
        // The connection's frames are read, and its calls run, on its own thread.
        group.addTask(executorPreference: connection) {
          await serve(connection, calls: calls)
          connection.finish()
        }
      }
    }
  }

  private func serve(_ connection: FrameConnection, calls: CallsInFlight) async {
    let maxPayloadLength = maxPayloadLength
    await withDiscardingTaskGroup { group in
      while let event = await connection.nextFrame() {
        switch event {
        case .tooLarge(let type, let id, let length):
          guard type.isRequest else { continue }
          let error = FrameErrorPayload(code: .tooLarge, message: "the \(type) frame's payload is \(length) bytes, over this plugin's maximum of \(maxPayloadLength)")
          connection.send(error.frame(id: id))
        case .frame(let frame):
          switch frame.type {
          case .healthCheck:
            // A child task on this connection's executor: no thread hop, and it can be cancelled.
            group.addTask { await answer(frame, calls: calls, connection: connection) }
          case .execute:
            // Admitted (counted in flight) as its frame is read, not when its task first runs:
            // a shutdown read from the same buffer right after it must wait for it, not refuse it.
            guard inFlight.admit() else {
              let refusal = FrameErrorPayload(code: .unavailable, message: "the plugin is shutting down and did not start this call")
              connection.send(refusal.frame(id: frame.id))
              continue
            }
            group.addTask {
              defer { inFlight.finished() }
              await answer(frame, calls: calls, connection: connection)
            }
          case .cancel:
            calls.cancel(frame.id)
          case .shutdown:
            connection.send(Frame(type: .shutdownResult, id: frame.id))
            shutdown.fire()
          default:
            let error = FrameErrorPayload(code: .invalid, message: "frame type \(frame.type.rawValue) is not a request this plugin knows (jank-frame 1)")
            connection.send(error.frame(id: frame.id))
          }
        }
      }
      // The host closed the connection (or broke the framing): its calls have no one to answer to.
      calls.cancelAll()
    }
  }

  private func answer(_ frame: Frame, calls: CallsInFlight, connection: FrameConnection) async {
    let reply: Frame
    if frame.type == .healthCheck {
      reply = shutdown.isFired
        ? FrameErrorPayload(code: .unavailable, message: "the plugin is shutting down").frame(id: frame.id)
        : await healthCheck(id: frame.id)
    } else {
      reply = await execute(frame, calls: calls, connection: connection)
    }
    connection.send(reply)
  }

  private func healthCheck(id: UInt64) async -> Frame {
    let response = await plugin.healthCheckResponse()
    return (try? Frame.message(.healthCheckResult, id: id, response))
      ?? FrameErrorPayload(code: .invalid, message: "could not encode the health answer").frame(id: id)
  }

  private func execute(_ frame: Frame, calls: CallsInFlight, connection: FrameConnection) async -> Frame {
    let id = frame.id
    let timeoutMs: UInt32
    let method: String
    let args: [String: JSONValue]
    do {
      (timeoutMs, method, args) = try frame.executeCall()
    } catch {
      return FrameErrorPayload(code: .invalid, message: "undecodable execute request: \(error)").frame(id: id)
    }
    guard calls.begin(id) else {
      return FrameErrorPayload(code: .invalid, message: "call id \(id) is already in flight on this connection").frame(id: id)
    }
    // The host's deadline also holds here, so a call nobody waits for stops on its own.
    let deadline = timeoutMs == 0 ? nil : connection.scheduleTimeout(callID: id, milliseconds: timeoutMs)
    defer {
      deadline.map(connection.cancelTimeout)
      calls.end(id)
    }
    do {
      return Frame.executeResult(id: id, data: try await plugin.execute(method: method, args: args))
    } catch {
      if Task.isCancelled {
        return FrameErrorPayload(code: .cancelled, message: "the call was cancelled: \(error)").frame(id: id)
      }
      return FrameErrorPayload(code: .pluginError, message: String(describing: error)).frame(id: id)
    }
  }
}

/// The tasks running calls on one connection, so that a cancel frame reaches the right one.
///
/// `UnsafeCurrentTask` is valid only while its task runs. Each task removes its own entry
/// (under the lock) before it finishes, and `cancel` looks entries up under the same lock,
/// so a cancel never touches a finished task.
final class CallsInFlight: @unchecked Sendable {
  private let lock = NIOLock()
  private var tasks: [UInt64: UnsafeCurrentTask] = [:]

  /// Registers the current task under `id`; false when that id is already in flight.
  func begin(_ id: UInt64) -> Bool {
    withUnsafeCurrentTask { task in
      guard let task else { return false }
      return lock.withLock {
        guard tasks[id] == nil else { return false }
        tasks[id] = task
        return true
      }
    }
  }

  var isEmpty: Bool { lock.withLock { tasks.isEmpty } }

  func end(_ id: UInt64) {
    lock.withLock { _ = tasks.removeValue(forKey: id) }
  }

  func cancel(_ id: UInt64) {
    lock.withLock { tasks[id]?.cancel() }
  }

  func cancelAll() {
    lock.withLock {
      for task in tasks.values { task.cancel() }
    }
  }
}

/// Calls in flight, which a shutdown waits for. Once the shutdown has fired no call starts
/// (it is answered `unavailable`), so the count reaching zero after that is final.
final class InFlightCounter: Sendable {
  private let count = NIOLockedValueBox(0)
  private let shutdown: ShutdownSignal
  private let drained = ShutdownSignal()

  init(shutdown: ShutdownSignal) {
    self.shutdown = shutdown
  }

  /// Counts a call in, unless the shutdown has fired. Checked under the count's lock, so a
  /// shutdown waiting for the count to drain sees every call admitted before it fired.
  func admit() -> Bool {
    count.withLockedValue { count in
      guard !shutdown.isFired else { return false }
      count += 1
      return true
    }
  }

  func finished() {
    let left = count.withLockedValue { count -> Int in
      count -= 1
      return count
    }
    if left == 0, shutdown.isFired { drained.fire() }
  }

  /// After the shutdown fired: returns when no call is in flight, or after `timeout`.
  func waitUntilDrained(within timeout: Duration) async {
    guard count.withLockedValue({ $0 }) > 0 else { return }
    await withTaskGroup(of: Void.self) { group in
      group.addTask { await self.drained.wait() }
      group.addTask { try? await Task.sleep(for: timeout) }
      await group.next()
      group.cancelAll()
    }
  }
}
