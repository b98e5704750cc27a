import Metrics
import Prometheus
import JankControl

/// The supervisor's Prometheus metrics, recorded through swift-metrics into a registry of
/// this supervisor's own (not the process-wide default: tests run several supervisors in one
/// process, and the API adds its own metrics beside these).
public final class SupervisorMetrics: Sendable {
  private let registry = PrometheusCollectorRegistry()
  private let factory: PrometheusMetricsFactory

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
    Counter(label: "jank_plugin_executes_total", dimensions: [("plugin_id", pluginID), ("outcome", outcome)], factory: factory).increment()
    Metrics.Timer(label: "jank_plugin_execute_duration_seconds", dimensions: [("plugin_id", pluginID)], factory: factory)
      .recordNanoseconds(Int64(duration.seconds * 1e9))
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
