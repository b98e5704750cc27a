import Metrics
import Synchronization
import Prometheus
import JankControl

/// The supervisor's Prometheus metrics, recorded through swift-metrics into a registry of
/// this supervisor's own (not the process-wide default: tests run several supervisors in one
/// process, and the API adds its own metrics beside these).
public final class SupervisorMetrics: Sendable {
  private let registry = PrometheusCollectorRegistry()
  private let factory: PrometheusMetricsFactory
  /// Handles made once per plugin (and outcome): making one looks it up in the registry
  /// under a lock and validates its name, which is most of what recording costs.
  private let executeHandles = Mutex<[String: ExecuteHandles]>([:])

  private struct ExecuteHandles: @unchecked Sendable {
    var duration: Metrics.Timer
    var outcomes: [String: Metrics.Counter] = [:]
  }

  public init() {
    var factory = PrometheusMetricsFactory(registry: registry)
    factory.defaultDurationHistogramBuckets = [
      .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10),
      .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
      .seconds(2.5), .seconds(5), .seconds(10), .seconds(30),
    ]
    self.factory = factory
  }

  /// One finished `plugin.execute`: `outcome` is `ok` or the error kind.
  func executed(pluginID: String, outcome: String, duration: Duration) {
    let (counter, timer) = executeHandles.withLock { handles in
      var entry = handles[pluginID] ?? ExecuteHandles(
        duration: Metrics.Timer(label: "jank_plugin_execute_duration_seconds", dimensions: [("plugin_id", pluginID)], factory: factory))
      let counter = entry.outcomes[outcome] ?? Metrics.Counter(
        label: "jank_plugin_executes_total", dimensions: [("plugin_id", pluginID), ("outcome", outcome)], factory: factory)
      if entry.outcomes[outcome] == nil {
        entry.outcomes[outcome] = counter
        handles[pluginID] = entry
      }
      return (counter, entry.duration)
    }
    counter.increment()
    timer.recordNanoseconds(Int64(duration.seconds * 1e9))
  }

  func restarted(pluginID: String) {
    Counter(label: "jank_plugin_restarts_total", dimensions: [("plugin_id", pluginID)], factory: factory).increment()
  }

  /// Prometheus text exposition, with the plugins-by-status gauge taken now.
  func render(statuses: [PluginStatus: Int], registered: Int) -> String {
    for status in PluginStatus.allCases {
      Gauge(label: "jank_plugins", dimensions: [("status", status.rawValue)], factory: factory).record(statuses[status] ?? 0)
    }
    Gauge(label: "jank_plugins_registered", factory: factory).record(registered)
    return registry.emitToString()
  }
}
