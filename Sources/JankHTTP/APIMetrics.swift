import HTTPTypes
import Hummingbird
import JankControl
import Metrics
import Prometheus

/// jank-api's own metrics (requests by route and status, latency, supervisor reachability),
/// in a registry of its own, served after the supervisor's at /metrics.
final class APIMetrics: Sendable {
  private let registry = PrometheusCollectorRegistry()
  private let factory: PrometheusMetricsFactory

  init() {
    var factory = PrometheusMetricsFactory(registry: registry)
    factory.defaultDurationHistogramBuckets = [
      .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10),
      .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
    ]
    self.factory = factory
  }

  func request(route: String, status: HTTPResponse.Status, duration: Duration) {
    Counter(label: "jank_api_requests_total", dimensions: [("route", route), ("status", String(status.code))], factory: factory).increment()
    Metrics.Timer(label: "jank_api_request_duration_seconds", dimensions: [("route", route)], factory: factory)
      .recordNanoseconds(Int64(duration.seconds * 1e9))
  }

  func supervisorUp(_ up: Bool) {
    Gauge(label: "jank_supervisor_up", factory: factory).record(up ? 1 : 0)
  }

  func render() -> String { registry.emitToString() }
}

/// Counts every request by its route (unknown paths as `other`, to bound the labels).
struct RequestMetricsMiddleware: RouterMiddleware {
  let metrics: APIMetrics
  let routes: Set<String>

  func handle(_ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response) async throws -> Response {
    let begin = ContinuousClock.now
    let response = try await next(request, context)
    let route = routes.contains(request.uri.path) ? request.uri.path : "other"
    metrics.request(route: route, status: response.status, duration: begin.duration(to: .now))
    return response
  }
}
