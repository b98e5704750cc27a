import JankControl
import JankJSON
import Logging

/// Execute discipline: deadlines, the concurrency cap, waiting for a restarting plugin,
/// resending an undelivered call once, and naming the crash that failed a call.
extension PluginRunner {
  func execute(method: String, args: [String: JSONValue], timeoutMs: Int?) async throws -> [String: JSONValue] {
    let timeout = Duration.milliseconds(min(timeoutMs ?? manifest.execTimeoutMs, manifest.execTimeoutMs))
    let deadline = ContinuousClock.now + timeout
    var resent = false
    while true {
      let running = try await readyProcess(before: deadline, timeout: timeout)
      do {
        return try await send(method: method, args: args, to: running, before: deadline, timeout: timeout)
      } catch let undelivered as UndeliveredCall {
        // The plugin never saw this call (its connection was down): send it once more, to
        // the process that replaces this one. A delivered call is never resent.
        guard !resent else { throw undelivered.error }
        resent = true
        logger.info("call not delivered; resending it after the plugin restarts", metadata: ["plugin_id": "\(id)", "method": "\(method)"])
        try await awaitReplacement(of: running, before: deadline, cause: undelivered.error)
      }
    }
  }

  /// The running process to send a call to, waiting within the deadline for a plugin that is
  /// (re)starting; fails at once when it is stopped, in error or at its concurrency cap.
  private func readyProcess(before deadline: ContinuousClock.Instant, timeout: Duration) async throws -> Running {
    // A loop: the plugin can become ready and crash again before this call gets its turn,
    // and then it is worth waiting for the next restart, deadline permitting.
    while status == .starting || status == .backoff, let readiness {
      guard await readiness.wait(until: deadline) != nil else {
        throw ControlError(.timeout, "plugin \(id) did not become ready within \(timeout.readable); it is \(status.rawValue)" + lastErrorSuffix)
      }
      await afterReadinessWait?(current?.pid)
    }
    guard let running = current, status == .ready || status == .running else {
      throw ControlError(.unavailable, "plugin \(id) is \(status.rawValue), not running; start it with `jankctl start \(id)`" + lastErrorSuffix)
    }
    guard inFlight < manifest.maxConcurrency else {
      throw ControlError(.busy, "plugin \(id) already has \(inFlight) calls in flight (max_concurrency \(manifest.maxConcurrency)); retry shortly")
    }
    guard ContinuousClock.now < deadline else {
      throw ControlError(.timeout, "plugin \(id) became ready too late for this call's deadline (\(timeout.readable)); retry")
    }
    return running
  }

  private var lastErrorSuffix: String { lastError.map { " (last error: \($0))" } ?? "" }

  private func send(method: String, args: [String: JSONValue], to running: Running, before deadline: ContinuousClock.Instant, timeout: Duration) async throws -> [String: JSONValue] {
    inFlight += 1
    inFlightByGeneration[running.generation, default: 0] += 1
    status = .running
    defer {
      inFlight -= 1
      inFlightByGeneration[running.generation, default: 1] -= 1
      if inFlightByGeneration[running.generation] == 0 {
        inFlightByGeneration[running.generation] = nil
        drained.removeValue(forKey: running.generation)?.deliver(())
      }
      if inFlight == 0, status == .running { status = .ready }
    }
    do {
      return try await running.connection.execute(method: method, args: args, timeout: ContinuousClock.now.duration(to: deadline))
    } catch let error as ControlError where error.kind == .timeout {
      // Say the call's whole budget, not what was left of it after waiting for readiness.
      throw ControlError(.timeout, "plugin \(id) did not answer \(method) within \(timeout.readable); raise timeout_ms (at most exec_timeout_ms \(manifest.execTimeoutMs)) or make the method faster")
    } catch let error as ControlError where error.kind == .unavailable {
      // Name the crash when the process died under the call (exactly the calls in flight fail).
      guard let status = await ProcessReaper.shared.waitForExit(pid: running.pid, within: .milliseconds(500)) else { throw error }
      // A closed connection can be seen before the reaper's own task reports the exit.
      if current?.generation == running.generation { processExited(generation: running.generation, status: status) }
      guard current?.generation != running.generation, let exit = lastExit else { throw error }
      let how = exit.signal.map { "killed by signal \($0)" } ?? exit.code.map { "exited with code \($0)" } ?? exit.reason.rawValue
      throw ControlError(
        .unavailable, "plugin \(id) crashed during the call (\(how)); the call was not retried, it is restarted per its restart policy",
        details: ["last_exit": .string(exit.reason.rawValue)])
    }
  }

  /// Waits until the process that refused a call is gone and handled (its exit starts the
  /// restart policy), so the next attempt waits for its replacement.
  private func awaitReplacement(of running: Running, before deadline: ContinuousClock.Instant, cause: ControlError) async throws {
    guard current?.generation == running.generation else { return }
    guard let exit = await ProcessReaper.shared.waitForExit(pid: running.pid, within: ContinuousClock.now.duration(to: deadline)) else {
      throw ControlError(.timeout, "plugin \(id) refused the call (\(cause.message)) and was not replaced within the call's deadline")
    }
    // The reaper's own task may not have reported this exit to the actor yet.
    processExited(generation: running.generation, status: exit)
  }
}
