import JankControl
import JankJSON

/// Rebuild and hot swap (design §9): start the new binary beside the old process, wait until it is
/// healthy, route new calls to it, let the calls already on the old process finish there,
/// then stop the old one. No call fails because of a swap.
extension PluginRunner {
  /// Builds the binary now; a running plugin is swapped onto the new one without a failed
  /// call. A failed build leaves a running plugin serving on its old binary.
  func build() async throws -> PluginInfo {
    // One build and swap at a time per plugin: an operator's build and a source change
    // arriving together must not start two new processes.
    let previous = buildChain
    let task = Task { () -> Result<PluginInfo, ControlError> in
      await previous?.value
      do {
        return .success(try await self.buildAndSwap())
      } catch let error as ControlError {
        return .failure(error)
      } catch {
        return .failure(ControlError(.internal, "\(error)"))
      }
    }
    buildChain = Task { _ = await task.value }
    return try await task.value.get()
  }

  private func buildAndSwap() async throws -> PluginInfo {
    do {
      _ = try await builder.build(id: id, manifest: manifest, directory: directory, uid: identity?.uid)
    } catch {
      lastError = "\(error)"
      throw ControlError(.pluginError, "\(error)", details: ["build_log_tail": .array(((error as? BuildFailure)?.logTail ?? []).map(JSONValue.string))])
    }
    lastError = nil
    return current != nil ? try await hotSwap() : info
  }

  func hotSwap() async throws -> PluginInfo {
    guard let old = current, starting == nil, !stopping else { return await start() }
    let launched: LaunchedPlugin
    do {
      launched = try await launcher.launch(manifest: manifest, directory: directory, socketDirectory: socketDirectory, identity: identity, log: log)
    } catch {
      lastError = "the new binary did not start, the old one keeps serving: \(error.message)"
      throw ControlError(.pluginError, lastError!, details: ["last_exit_reason": .string(error.reason.rawValue)])
    }
    // While the new process started, the old one may have been stopped or have crashed.
    guard wantsRunning else {
      _ = await terminate(Running(launched, generation: -1))
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
    guard (inFlightByGeneration[generation] ?? 0) > 0 else { return }
    let done = drained[generation] ?? OneShot()
    drained[generation] = done
    _ = await done.wait(until: .now + timeout)
    drained[generation] = nil
  }
}
