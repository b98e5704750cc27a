import JankControl
import JankJSON

/// Hot swap (design §9): start the new binary beside the old process, wait until it is
/// healthy, route new calls to it, let the calls already on the old process finish there,
/// then stop the old one. No call fails because of a swap.
extension PluginRunner {
  func hotSwap() async throws -> PluginInfo {
    guard let old = current, starting == nil, !stopping else { return await start() }
    let launched: LaunchedPlugin
    do {
      launched = try await launcher.launch(manifest: manifest, directory: directory, socketDirectory: socketDirectory, log: log)
    } catch {
      lastError = "the new binary did not start, the old one keeps serving: \(error.message)"
      throw ControlError(.pluginError, lastError!, details: ["last_exit": .string(error.reason.rawValue)])
    }
    // While the new process started, the old one may have been stopped or have crashed.
    guard wantsRunning else {
      _ = await terminate(Running(generation: -1, pid: launched.pid, connection: launched.connection, socketPath: nil, cgroup: launched.cgroup, limitsNote: nil, startedAt: .now, startedAtMonotonic: .now))
      return info
    }
    // Whatever serves now (the old process, or one that replaced it after a crash) hands
    // over to the new process, finishes its own calls and stops.
    let replaced = current
    install(launched)
    logger.info("plugin swapped onto its new binary", metadata: ["plugin_id": "\(id)", "old_pid": "\(old.pid)", "pid": "\(launched.pid)"])
    if let replaced {
      await drain(generation: replaced.generation, within: .milliseconds(manifest.execTimeoutMs))
      _ = await terminate(replaced)
    }
    return info
  }

  /// Waits until the calls sent to one process have all finished (at most `timeout`).
  private func drain(generation: Int, within timeout: Duration) async {
    let deadline = ContinuousClock.now + timeout
    while (inFlightByGeneration[generation] ?? 0) > 0, ContinuousClock.now < deadline {
      try? await Task.sleep(for: .milliseconds(5))
    }
  }
}
