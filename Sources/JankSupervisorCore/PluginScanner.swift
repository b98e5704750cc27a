import Synchronization

/// Scans of the plugins folder for the supervisor. Every scan runs on `BlockingIO`, never on
/// the supervisor actor: it reads manifests and hashes sources, and a plugin folder may hold
/// a 2 GB file. A registration burst (a thousand plugins at start) shares one scan instead of
/// making a thousand.
final class PluginScanner: Sendable {
  private struct State {
    var last: (at: ContinuousClock.Instant, plugins: [DiscoveredPlugin])?
    var inFlight: Task<[DiscoveredPlugin], Never>?
  }

  let pluginsDirectory: String
  private let state = Mutex(State())

  init(pluginsDirectory: String) {
    self.pluginsDirectory = pluginsDirectory
  }

  /// A scan of its own, now: what `list` shows. Folders in `skipping` (those of registered
  /// plugins, which `list` describes from their runners) are not read.
  func scan(skipping: Set<String> = []) async -> [DiscoveredPlugin] {
    let directory = pluginsDirectory
    return await BlockingIO.run { PluginDiscovery.scan(pluginsDirectory: directory, skipping: skipping) }
  }

  /// A new scan, or the one under way: callers arriving while it runs share it.
  func fresh() async -> [DiscoveredPlugin] {
    let scan = state.withLock { state in
      if let running = state.inFlight { return running }
      let started = ContinuousClock.now
      let task = Task {
        let plugins = await self.scan()
        self.state.withLock { state in
          state.inFlight = nil
          state.last = (started, plugins)
        }
        return plugins
      }
      state.inFlight = task
      return task
    }
    return await scan.value
  }

  /// The scan of the last second, or a fresh one.
  func recent() async -> [DiscoveredPlugin] {
    if let last = state.withLock({ $0.last }), ContinuousClock.now - last.at < .seconds(1) { return last.plugins }
    return await fresh()
  }
}
