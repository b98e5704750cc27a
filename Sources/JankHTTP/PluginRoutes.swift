import Foundation
import HTTPTypes
import Hummingbird
import JankControl
import JankJSON

/// The routes of design §7: each turns HTTP into one control call and its answer into the
/// envelope. No plugin state lives here.
struct PluginRoutes: Sendable {
  let link: SupervisorLink
  let bodyLimit: Int
  /// How long a call that can run long may wait for the supervisor (register, build, …).
  let callTimeout: Duration
  let metrics: APIMetrics
  let startedAt = ContinuousClock.now

  /// Every route and its one method (the error middleware answers 405 for the others).
  static let table: [String: HTTPRequest.Method] = [
    "/api/plugin/list": .get, "/api/plugin/get": .get, "/api/plugin/logs": .get,
    "/api/plugin/register": .post, "/api/plugin/unregister": .post, "/api/plugin/start": .post,
    "/api/plugin/stop": .post, "/api/plugin/restart": .post, "/api/plugin/build": .post,
    "/api/plugin/execute": .post, "/api/health": .get, "/metrics": .get, "/api/openapi.json": .get,
  ]

  /// Reads answer from the supervisor's memory: past this it is wedged, not busy.
  private var quick: Duration { APIConfiguration.quickCallTimeout }

  func add(to router: Router<APIRequestContext>) {
    router.get("/api/plugin/list") { request, context in
      let status = try request.uri.queryParameters["status"].map { raw -> PluginStatus in
        guard let status = PluginStatus(rawValue: String(raw)) else {
          throw APIError.invalid("unknown status '\(raw.prefix(40))'; one of: \(PluginStatus.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return status
      }
      return try Envelope.success(try await link.call(ControlMethods.list, ListParams(status: status), timeout: quick), requestID: context.requestID)
    }
    router.get("/api/plugin/get") { request, context in
      let id = try Self.query(request, "id")
      return try Envelope.success(try await link.call(ControlMethods.get, PluginIDParams(id: id), timeout: quick), requestID: context.requestID)
    }
    router.get("/api/plugin/logs") { request, context in
      let id = try Self.query(request, "id")
      let tail = try request.uri.queryParameters["tail"].map { raw -> Int in
        guard let tail = Int(raw), (1...1000).contains(tail) else { throw APIError.invalid("tail must be a whole number from 1 to 1000, not '\(raw.prefix(40))'") }
        return tail
      }
      let source = try request.uri.queryParameters["source"].map { raw -> String in
        guard raw == "plugin" || raw == "build" else { throw APIError.invalid("source must be plugin or build, not '\(raw.prefix(40))'") }
        return String(raw)
      }
      return try Envelope.success(try await link.call(ControlMethods.logs, LogsParams(id: id, tail: tail, source: source), timeout: quick), requestID: context.requestID)
    }
    router.post("/api/plugin/register") { request, context in
      let body = try await RequestBody.read(request, limit: bodyLimit)
      let params = RegisterParams(id: try body.id(), rebuild: try body.optionalBool("rebuild"))
      return try Envelope.success(try await link.call(ControlMethods.register, params, timeout: callTimeout), requestID: context.requestID)
    }
    router.post("/api/plugin/unregister") { request, context in
      let body = try await RequestBody.read(request, limit: bodyLimit)
      return try Envelope.success(try await link.call(ControlMethods.unregister, PluginIDParams(id: try body.id()), timeout: callTimeout), requestID: context.requestID)
    }
    for (path, method) in [
      ("/api/plugin/start", ControlMethods.start), ("/api/plugin/stop", ControlMethods.stop),
      ("/api/plugin/restart", ControlMethods.restart), ("/api/plugin/build", ControlMethods.build),
    ] {
      router.post(RouterPath(path)) { request, context in
        let body = try await RequestBody.read(request, limit: bodyLimit)
        return try Envelope.success(try await link.call(method, PluginIDParams(id: try body.id()), timeout: callTimeout), requestID: context.requestID)
      }
    }
    router.post("/api/plugin/execute") { request, context in
      try await execute(request, context)
    }
    router.get("/api/health") { _, context in
      try await health(context)
    }
    router.get("/metrics") { _, _ in
      await prometheusText()
    }
    router.get("/api/openapi.json") { _, _ in
      Response(
        status: .ok, headers: [.contentType: "application/json; charset=utf-8"],
        body: ResponseBody(byteBuffer: ByteBuffer(bytes: OpenAPIDocument.json)))
    }
  }

  /// `{id, method, args?, payload?, timeout_ms?}`; the seed's `payload` becomes `args.payload`.
  private func execute(_ request: Request, _ context: APIRequestContext) async throws -> Response {
    let body = try await RequestBody.read(request, limit: bodyLimit)
    let id = try body.id()
    let method = try body.string("method", hint: "the plugin method to call, such as greet")
    var args = try body.optionalObject("args") ?? [:]
    if let payload = try body.optionalString("payload") { args["payload"] = .string(payload) }
    let timeoutMs = try body.optionalInteger("timeout_ms", in: 1...3_600_000)
    // The supervisor fails the call at its deadline; the margin covers the way back.
    let wait = timeoutMs.map { .milliseconds($0) + .seconds(10) } ?? callTimeout
    let result = try await link.call(ControlMethods.execute, ExecuteParams(id: id, method: method, args: args, timeoutMs: timeoutMs), timeout: wait)
    return try Envelope.success(result, requestID: context.requestID)
  }

  /// Up or not, for anyone; the details (uptime, socket path, the supervisor's pid and
  /// folders) only with a valid token: a port scanner learns nothing about the host.
  private func health(_ context: APIRequestContext) async throws -> Response {
    guard context.hasValidToken else {
      do {
        _ = try await link.call(ControlMethods.status, NoParams(), timeout: .seconds(2))
        return try Envelope.success(["api": ["status": "ok"], "supervisor": ["status": "ok"]] as JSONValue, requestID: context.requestID)
      } catch {
        throw APIError(ControlError(.unavailable, "the supervisor is unreachable", details: ["api": ["status": "ok"], "supervisor": .null]))
      }
    }
    let api: JSONValue = ["status": "ok", "uptime_s": .number(startedAt.duration(to: .now).seconds), "supervisor_socket": .string(link.socketPath)]
    do {
      let supervisor = try await link.call(ControlMethods.status, NoParams(), timeout: quick)
      return try Envelope.success(HealthData(api: api, supervisor: supervisor), requestID: context.requestID)
    } catch var error as APIError {
      error.details["api"] = api
      error.details["supervisor"] = .null
      throw error
    }
  }

  struct HealthData: Encodable {
    var api: JSONValue
    var supervisor: SupervisorStatus
  }

  /// The supervisor's metrics followed by the API's own; the API's alone (with
  /// `jank_supervisor_up 0`) while the supervisor is away.
  private func prometheusText() async -> Response {
    var text = ""
    do {
      text = try await link.call(ControlMethods.metrics, NoParams(), timeout: quick).text
      metrics.supervisorUp(true)
    } catch {
      metrics.supervisorUp(false)
    }
    text += metrics.render()
    return Response(
      status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
      body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
  }

  private static func query(_ request: Request, _ name: String) throws -> String {
    guard let value = request.uri.queryParameters[Substring(name)], !value.isEmpty else {
      throw APIError.invalid("query parameter '\(name)' is required, e.g. ?\(name)=dev.jank.plugins.hello-world")
    }
    return String(value)
  }
}
