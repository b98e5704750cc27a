import Foundation
import Glibc
import JankControl

/// Stopping: go-plugin's stop sequence for a running process, and cancelling a start.
extension PluginRunner {
  /// The supervisor's shutdown: stop, and never start again (a start racing the shutdown
  /// must not leave a plugin running).
  func retire() async -> PluginInfo {
    retired = true
    return await stop()
  }

  /// go-plugin's stop sequence: Shutdown RPC, wait, SIGTERM to the group, 1 s, SIGKILL. A
  /// plugin still starting (or building) has its start cancelled instead, at once.
  func stop() async -> PluginInfo {
    requests += 1
    let request = requests
    wantsRunning = false
    cancelRestartTimer()
    await cancelLaunch()
    // A hot swap may install a new process while the old one stops: stop that one too.
    while current != nil, requests == request {
      await stopProcess()
    }
    // A start or restart that arrived meanwhile is the last word.
    guard requests == request else { return info }
    if current == nil, status != .error { setStatus(.stopped) }
    return info
  }

  /// Stops the current process; a stop already under way (a restart's, a swap's) is waited
  /// for rather than reported as done while the process still runs.
  func stopProcess() async {
    if let ongoing = stopInProgress {
      await ongoing.value
      return
    }
    guard let running = current else { return }
    let task = Task { await self.stopSequence(running) }
    stopInProgress = task
    await task.value
    stopInProgress = nil
  }

  private func stopSequence(_ running: Running) async {
    stopping = true
    healthWatch?.cancel()
    healthWatch = nil
    defer { stopping = false }
    let exit = await terminate(running)
    // A hot swap installed another process meanwhile: that one is not this stop's to forget.
    guard current?.generation == running.generation else { return }
    current = nil
    removeSocketDirectory()
    lastExit = LastExit(reason: .stopped, code: exit.flatMap(\.code), signal: exit.flatMap(\.signal), at: ISO8601.now())
    setStatus(.stopped)
    logger.info("plugin stopped", metadata: ["plugin_id": "\(id)"])
  }

  /// go-plugin's stop sequence for one process: the Shutdown RPC and the wait for the exit
  /// share one `stop_timeout_ms`, then SIGTERM to its group, 1 s, SIGKILL; then whatever is
  /// left in its group and cgroup. At most stop_timeout_ms + 1 s before the SIGKILL.
  func terminate(_ running: Running) async -> ExitStatus? {
    let deadline = ContinuousClock.now + .milliseconds(manifest.stopTimeoutMs)
    await running.connection.shutdown(timeout: ContinuousClock.now.duration(to: deadline))
    var exit = await Self.waitForExit(running.pid, within: max(ContinuousClock.now.duration(to: deadline), .zero))
    if exit == nil {
      kill(-running.pid, SIGTERM)
      exit = await Self.waitForExit(running.pid, within: .seconds(1))
    }
    if exit == nil {
      kill(-running.pid, SIGKILL)
      exit = await ProcessReaper.shared.waitForExit(pid: running.pid)
    }
    kill(-running.pid, SIGKILL)  // any child the plugin left in its group
    running.cgroup?.remove()  // and any that left the group
    ProcessReaper.shared.forget(pid: running.pid)
    running.connection.close()
    if let socket = running.socketPath { unlink(socket) }
    return exit
  }

  static func waitForExit(_ pid: pid_t, within timeout: Duration) async -> ExitStatus? {
    await ProcessReaper.shared.waitForExit(pid: pid, within: timeout)
  }
}
