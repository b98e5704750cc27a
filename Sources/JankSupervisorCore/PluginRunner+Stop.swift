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
    wantsRunning = false
    cancelRestartTimer()
    await cancelLaunch()
    if current != nil {
      await stopProcess()
      setStatus(.stopped)
    } else if status != .error {
      setStatus(.stopped)
    }
    return info
  }

  func stopProcess() async {
    guard let running = current, !stopping else { return }
    stopping = true
    healthWatch?.cancel()
    healthWatch = nil
    defer { stopping = false }
    let exit = await terminate(running)
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
