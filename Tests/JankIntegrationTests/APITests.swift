import Foundation
import JankJSON
import Testing

/// The real supervisor and the real jank-api on a free port, driven with real HTTP.
@Suite struct APITests {
  /// A supervisor with a hello-world and a fault plugin, and jank-api in front of it.
  static func withStack(
    apiArguments: [String] = [], environment: [String: String] = [:],
    _ body: (Workspace, SupervisorProcess, APIProcess) async throws -> Void
  ) async throws {
    let workspace = try Workspace()
    try workspace.addHelloWorld("hello")
    _ = try workspace.addFaultPlugin("fault", extra: #","max_concurrency":1,"restart":{"initial_delay_ms":20}"#)
    let supervisor = try await SupervisorProcess(workspace)
    defer { supervisor.terminate() }
    let api = try await APIProcess(socket: workspace.socket, arguments: apiArguments, environment: environment)
    defer { api.terminate() }
    do {
      try await body(workspace, supervisor, api)
    } catch {
      // Say what jank-api and the supervisor were doing, so that a failure names its cause.
      throw APITestError("\(error); jank-api \(api.process.ended.map { "ended: \($0)" } ?? "running"), supervisor \(supervisor.process.ended.map { "ended: \($0)" } ?? "running"); jank-api's last log lines: \(api.stderr.suffix(8).joined(separator: " | "))")
    }
  }

  static let hello = "dev.test.hello"
  static let fault = "dev.test.fault"

  @Test func everyRouteAnswersInTheEnvelope() async throws {
    try await Self.withStack { workspace, _, api in
      let port = api.port
      let list = try await http("GET", port, "/api/plugin/list")
      #expect(list.status == 200)
      #expect(list.json?["code"] == 0)
      #expect(list.json?["msg"] == "ok")
      #expect(list.json?["data"]?["unregistered"]?.arrayValue?.count == 2)
      #expect(list.json?["request_id"]?.stringValue == list.header("X-Request-ID"))
      // The envelope's keys come in the design's order.
      #expect(list.text.hasPrefix(#"{"code":0,"msg":"ok","data":"#))

      let registered = try await http("POST", port, "/api/plugin/register", json: ["id": .string(Self.hello)])
      #expect(registered.status == 200, "\(registered.text)")
      #expect(registered.json?["data"]?["status"] == "ready")
      _ = try await http("POST", port, "/api/plugin/register", json: ["id": .string(Self.fault)])

      let get = try await http("GET", port, "/api/plugin/get?id=\(Self.hello)")
      #expect(get.json?["data"]?["id"]?.stringValue == Self.hello)
      #expect(get.json?["data"]?["pid"]?.numberValue != nil)

      let greet = try await http("POST", port, "/api/plugin/execute", json: ["id": .string(Self.hello), "method": "greet", "args": ["name": "Ada"]])
      #expect(greet.status == 200)
      #expect(greet.json?["data"]?["method"] == "greet")
      #expect(greet.json?["data"]?["data"]?["message"] == "Hello, Ada!")

      // The seed's request shape: payload becomes args.payload.
      let seed = try await http("POST", port, "/api/plugin/execute", json: ["id": .string(Self.fault), "method": "echo", "payload": "raw text"])
      #expect(seed.json?["data"]?["data"] == ["payload": "raw text"])

      let logs = try await http("GET", port, "/api/plugin/logs?id=\(Self.hello)&tail=5")
      #expect(logs.status == 200)
      #expect(logs.json?["data"]?["lines"]?.arrayValue?.isEmpty == false)

      let stopped = try await http("POST", port, "/api/plugin/stop", json: ["id": .string(Self.hello)])
      #expect(stopped.json?["data"]?["status"] == "stopped")
      let started = try await http("POST", port, "/api/plugin/start", json: ["id": .string(Self.hello)])
      #expect(started.json?["data"]?["status"] == "ready")
      let oldPID = started.json?["data"]?["pid"]
      let restarted = try await http("POST", port, "/api/plugin/restart", json: ["id": .string(Self.hello)])
      #expect(restarted.json?["data"]?["status"] == "ready")
      #expect(restarted.json?["data"]?["pid"] != oldPID)

      // Without a token, health says only that both are up: no pid, folder or socket path.
      let health = try await http("GET", port, "/api/health")
      #expect(health.status == 200)
      #expect(health.json?["data"] == ["api": ["status": "ok"], "supervisor": ["status": "ok"]], "\(health.text)")
      #expect(!health.text.contains(workspace.root), "\(health.text)")

      let metrics = try await http("GET", port, "/metrics")
      #expect(metrics.status == 200)
      #expect(metrics.header("Content-Type")?.hasPrefix("text/plain") == true)
      #expect(metrics.text.contains(#"jank_plugin_executes_total{plugin_id="dev.test.hello",outcome="ok"} 1"#), "\(metrics.text)")
      #expect(metrics.text.contains("jank_plugin_execute_duration_seconds_bucket"))
      #expect(metrics.text.contains(#"jank_plugins{status="ready"} 2"#))
      #expect(metrics.text.contains(#"jank_plugin_restarts_total{plugin_id="dev.test.hello"} 1"#))
      #expect(metrics.text.contains("jank_supervisor_up 1"))
      #expect(metrics.text.contains("jank_api_requests_total"))

      let openapi = try await http("GET", port, "/api/openapi.json")
      #expect(openapi.status == 200)
      #expect(openapi.json?["openapi"]?.stringValue?.hasPrefix("3.") == true)
      let documented = Set(openapi.json?["paths"]?.objectValue?.keys.map { $0 } ?? [])
      #expect(documented == ["/api/plugin/list", "/api/plugin/get", "/api/plugin/logs", "/api/plugin/register", "/api/plugin/unregister", "/api/plugin/start", "/api/plugin/stop", "/api/plugin/restart", "/api/plugin/build", "/api/plugin/execute", "/api/health", "/metrics", "/api/openapi.json"])

      let unregistered = try await http("POST", port, "/api/plugin/unregister", json: ["id": .string(Self.fault)])
      #expect(unregistered.json?["data"] == ["id": .string(Self.fault)])
      _ = workspace
    }
  }

  @Test func buildRebuildsAndABuildFailureIsA502WithTheLogTail() async throws {
    let workspace = try Workspace()
    // A plugin built by a shell command from a "source" file.
    let id = try workspace.addPlugin(
      "built", script: nil,
      extra: #","build":{"command":["sh","-c","echo compiling; cp src/run.sh bin/run && chmod +x bin/run"]}"#)
    let dir = workspace.plugins + "/built"
    try FileManager.default.createDirectory(atPath: dir + "/src", withIntermediateDirectories: true)
    try "#!/bin/sh\nexec '\(Binaries.helloWorld)' \"$@\"\n".write(toFile: dir + "/src/run.sh", atomically: true, encoding: .utf8)
    let supervisor = try await SupervisorProcess(workspace)
    defer { supervisor.terminate() }
    let api = try await APIProcess(socket: workspace.socket)
    defer { api.terminate() }

    let registered = try await http("POST", api.port, "/api/plugin/register", json: ["id": .string(id)])
    #expect(registered.json?["data"]?["status"] == "ready", "\(registered.text)")
    let built = try await http("POST", api.port, "/api/plugin/build", json: ["id": .string(id)])
    #expect(built.status == 200, "\(built.text)")
    #expect(built.json?["data"]?["status"] == "ready")

    try FileManager.default.removeItem(atPath: dir + "/src/run.sh")
    let failed = try await http("POST", api.port, "/api/plugin/build", json: ["id": .string(id)])
    #expect(failed.status == 502)
    #expect(failed.json?["msg"]?.stringValue?.contains("failed") == true, "\(failed.text)")
    #expect(failed.json?["data"]?["build_log_tail"]?.arrayValue?.contains("compiling") == true, "\(failed.text)")
    // The old binary keeps serving.
    let greet = try await http("POST", api.port, "/api/plugin/execute", json: ["id": .string(id), "method": "greet", "args": ["name": "x"]])
    #expect(greet.status == 200, "\(greet.text)")
  }

  struct ErrorCase: Sendable {
    var name: String
    var method: String
    var path: String
    var body: String?
    var status: Int
    var kind: String
    var message: String
  }

  static let errorCases: [ErrorCase] = [
    ErrorCase(name: "invalid JSON", method: "POST", path: "/api/plugin/start", body: "{id:", status: 400, kind: "invalid", message: "not valid JSON"),
    ErrorCase(name: "not an object", method: "POST", path: "/api/plugin/start", body: "[1]", status: 400, kind: "invalid", message: "must be a JSON object"),
    ErrorCase(name: "empty body", method: "POST", path: "/api/plugin/start", body: "", status: 400, kind: "invalid", message: "body is empty"),
    ErrorCase(name: "missing id", method: "POST", path: "/api/plugin/start", body: "{}", status: 400, kind: "invalid", message: "field 'id' is required"),
    ErrorCase(name: "id of wrong type", method: "POST", path: "/api/plugin/start", body: #"{"id":42}"#, status: 400, kind: "invalid", message: "must be a non-empty string"),
    ErrorCase(name: "path trick in id", method: "POST", path: "/api/plugin/start", body: #"{"id":"../../etc/passwd"}"#, status: 400, kind: "invalid", message: "is not a plugin id"),
    ErrorCase(name: "missing method", method: "POST", path: "/api/plugin/execute", body: #"{"id":"dev.test.hello"}"#, status: 400, kind: "invalid", message: "field 'method' is required"),
    ErrorCase(name: "bad timeout", method: "POST", path: "/api/plugin/execute", body: #"{"id":"dev.test.hello","method":"greet","timeout_ms":1.5}"#, status: 400, kind: "invalid", message: "timeout_ms"),
    ErrorCase(name: "args not an object", method: "POST", path: "/api/plugin/execute", body: #"{"id":"dev.test.hello","method":"greet","args":[1]}"#, status: 400, kind: "invalid", message: "field 'args' must be a JSON object"),
    ErrorCase(name: "missing query id", method: "GET", path: "/api/plugin/get", body: nil, status: 400, kind: "invalid", message: "query parameter 'id' is required"),
    ErrorCase(name: "bad status filter", method: "GET", path: "/api/plugin/list?status=sleepy", body: nil, status: 400, kind: "invalid", message: "unknown status"),
    ErrorCase(name: "bad tail", method: "GET", path: "/api/plugin/logs?id=dev.test.hello&tail=0", body: nil, status: 400, kind: "invalid", message: "tail"),
    ErrorCase(name: "unknown plugin", method: "GET", path: "/api/plugin/get?id=dev.test.nobody", body: nil, status: 404, kind: "not_found", message: "not registered"),
    ErrorCase(name: "unknown route", method: "GET", path: "/api/plugin/fly", body: nil, status: 404, kind: "no_route", message: "openapi.json"),
    ErrorCase(name: "wrong method", method: "GET", path: "/api/plugin/execute", body: nil, status: 405, kind: "method_not_allowed", message: "use POST"),
    ErrorCase(name: "already registered", method: "POST", path: "/api/plugin/register", body: #"{"id":"dev.test.hello"}"#, status: 409, kind: "conflict", message: "already registered"),
    ErrorCase(name: "plugin error", method: "POST", path: "/api/plugin/execute", body: #"{"id":"dev.test.hello","method":"fly"}"#, status: 502, kind: "plugin_error", message: "unknown method: fly"),
    ErrorCase(name: "timeout", method: "POST", path: "/api/plugin/execute", body: #"{"id":"dev.test.fault","method":"sleep","args":{"ms":5000},"timeout_ms":200}"#, status: 504, kind: "timeout", message: "200 ms"),
  ]

  /// One stack for every case (each is one request): many stacks at once would only load
  /// the machine.
  @Test func clientMistakesAndPluginFailuresGetTheirStatus() async throws {
    try await Self.withStack { _, _, api in
      _ = try await http("POST", api.port, "/api/plugin/register", json: ["id": .string(Self.hello)])
      _ = try await http("POST", api.port, "/api/plugin/register", json: ["id": .string(Self.fault)])
      for error in Self.errorCases {
        let requestID = "req-\(error.name.replacingOccurrences(of: " ", with: "-"))"
        let headers = ["X-Request-ID": requestID].merging(error.body == nil ? [:] : ["Content-Type": "application/json"]) { $1 }
        let response = try await http(error.method, api.port, error.path, body: error.body.map { Data($0.utf8) }, headers: headers)
        #expect(response.status == error.status, "\(error.name): \(response.text)")
        #expect(response.json?["code"]?.numberValue.map { $0 != 0 } == true, "\(error.name)")
        #expect(response.json?["data"]?["kind"]?.stringValue == error.kind, "\(error.name): \(response.text)")
        #expect(response.json?["msg"]?.stringValue?.contains(error.message) == true, "\(error.name): \(response.text)")
        #expect(response.json?["request_id"] == .string(requestID), "\(error.name)")
        #expect(response.header("X-Request-ID") == requestID, "\(error.name)")
      }
    }
  }

  @Test func busyPluginNotRunningAndOversizedBodies() async throws {
    try await Self.withStack(apiArguments: ["--body-limit", "4096"]) { _, _, api in
      let port = api.port
      _ = try await http("POST", port, "/api/plugin/register", json: ["id": .string(Self.fault)])
      // max_concurrency 1: a second call while one sleeps is 429 at once.
      let slow = Task { try await http("POST", port, "/api/plugin/execute", json: ["id": .string(Self.fault), "method": "sleep", "args": ["ms": 1500]]) }
      #expect(await eventually { (try? await http("GET", port, "/api/plugin/get?id=\(Self.fault)").json?["data"]?["in_flight"]) == 1 })
      let busy = try await http("POST", port, "/api/plugin/execute", json: ["id": .string(Self.fault), "method": "echo"])
      #expect(busy.status == 429, "\(busy.text)")
      #expect(busy.json?["data"]?["kind"] == "busy")
      #expect(try await slow.value.status == 200)

      let tooLarge = try await http("POST", port, "/api/plugin/execute", json: ["id": .string(Self.fault), "method": "echo", "payload": .string(String(repeating: "x", count: 10_000))])
      #expect(tooLarge.status == 413, "\(tooLarge.text)")
      #expect(tooLarge.json?["msg"]?.stringValue?.contains("4096") == true)

      _ = try await http("POST", port, "/api/plugin/stop", json: ["id": .string(Self.fault)])
      let stopped = try await http("POST", port, "/api/plugin/execute", json: ["id": .string(Self.fault), "method": "echo"])
      #expect(stopped.status == 503)
      #expect(stopped.json?["msg"]?.stringValue?.contains("jankctl start") == true)
    }
  }

  @Test func aTokenGuardsEveryRouteButHealth() async throws {
    let token = "s3cret-token-for-the-test-0123456789"
    try await Self.withStack(environment: ["JANK_API_TOKEN": token]) { workspace, _, api in
      let port = api.port
      let missing = try await http("GET", port, "/api/plugin/list")
      #expect(missing.status == 401)
      #expect(missing.header("WWW-Authenticate")?.hasPrefix("Bearer") == true)
      #expect(missing.json?["msg"]?.stringValue?.contains("Authorization: Bearer") == true)
      let wrong = try await http("GET", port, "/metrics", headers: ["Authorization": "Bearer s3cret-token-for-the-test-0123456780"])
      #expect(wrong.status == 401)
      let right = try await http("GET", port, "/api/plugin/list", headers: ["Authorization": "Bearer \(token)"])
      #expect(right.status == 200)
      let health = try await http("GET", port, "/api/health")
      #expect(health.status == 200)
      #expect(health.json?["data"] == ["api": ["status": "ok"], "supervisor": ["status": "ok"]], "\(health.text)")
      for wrongToken in ["Bearer nope-nope-nope-nope-nope", "Basic \(token)"] {
        let guessed = try await http("GET", port, "/api/health", headers: ["Authorization": wrongToken])
        #expect(guessed.status == 200 && !guessed.text.contains("socket"), "\(guessed.text)")
      }
      // With the token, the details.
      let detailed = try await http("GET", port, "/api/health", headers: ["Authorization": "Bearer \(token)"])
      #expect(detailed.json?["data"]?["supervisor"]?["registered"] == 0, "\(detailed.text)")
      #expect(detailed.json?["data"]?["api"]?["supervisor_socket"]?.stringValue == workspace.socket)
      try await Self.expectBearerSchemes(port: port, token: token)
    }
  }

  /// The scheme in any case (RFC 7235), one or more spaces before the token; other schemes
  /// and a bare token are refused.
  static func expectBearerSchemes(port: Int, token: String) async throws {
    for header in ["Bearer \(token)", "bearer \(token)", "BEARER \(token)", "bEaReR   \(token)"] {
      let response = try await http("GET", port, "/api/plugin/list", headers: ["Authorization": header])
      #expect(response.status == 200, "\(header): \(response.text)")
    }
    for header in ["Basic \(token)", token, "Bearer", "Bearer ", "Bearer \(token)x", "Bearer\(token)"] {
      let response = try await http("GET", port, "/api/plugin/list", headers: ["Authorization": header])
      #expect(response.status == 401, "\(header): \(response.text)")
      #expect(response.json?["data"]?["kind"] == "unauthorized", "\(header)")
    }
  }

  @Test func aTokenFileFromTheFlagOrTheEnvironmentGuardsTheAPI() async throws {
    let token = "from-a-file-0123456789abcdef"
    try await Self.withStack { workspace, _, _ in
      let file = workspace.root + "/api-token"
      // Trailing whitespace and newline are not part of the token.
      try "\(token) \n".write(toFile: file, atomically: true, encoding: .utf8)
      let fromFlag = try await APIProcess(socket: workspace.socket, arguments: ["--token-file", file])
      defer { fromFlag.terminate() }
      let fromEnv = try await APIProcess(socket: workspace.socket, environment: ["JANK_API_TOKEN_FILE": file])
      defer { fromEnv.terminate() }
      for api in [fromFlag, fromEnv] {
        let missing = try await http("GET", api.port, "/api/plugin/list")
        #expect(missing.status == 401)
        #expect(missing.json?["msg"]?.stringValue?.contains("Authorization: Bearer") == true)
        #expect(try await http("GET", api.port, "/metrics", headers: ["Authorization": "Bearer \(token) "]).status == 200)
        #expect(try await http("GET", api.port, "/api/health").status == 200)
        try await Self.expectBearerSchemes(port: api.port, token: token)
      }
    }
  }

  /// Settings jank-api cannot use stop it at start (exit 2) with a sentence that says what to
  /// do; none is silently replaced by its default.
  @Test func badSettingsAreRefusedAtStartWithWhatToDo() async throws {
    let dir = "/tmp/jit-refuse-\(UUID().uuidString.prefix(8).lowercased())"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try "".write(toFile: dir + "/empty", atomically: true, encoding: .utf8)
    try "short-token\n".write(toFile: dir + "/short", atomically: true, encoding: .utf8)
    // A socket and a free port unless the case sets its own (a case wrongly accepted must
    // not take port 8080 while it runs).
    let base = ["JANK_SOCKET": dir + "/none.sock", "JANK_API_LISTEN": "127.0.0.1:0"]
    let cases: [(arguments: [String], environment: [String: String], message: [String])] = [
      (["--token-file", dir + "/empty"], [:], ["token file \(dir)/empty (from --token-file) is empty", "openssl rand -hex 32"]),
      ([], ["JANK_API_TOKEN_FILE": dir + "/empty"], ["(from JANK_API_TOKEN_FILE) is empty"]),
      (["--token-file", dir + "/missing"], [:], ["cannot read the token file", "no such file", "openssl rand -hex 32 > \(dir)/missing"]),
      (["--token-file", dir], [:], ["cannot read the token file", "is a directory", "point --token-file at a file"]),
      ([], ["JANK_API_TOKEN_FILE": dir + "/short"], ["token file \(dir)/short (from JANK_API_TOKEN_FILE) is 11 characters", "at least 16", "openssl rand"]),
      ([], ["JANK_API_TOKEN": "short"], ["from JANK_API_TOKEN is 5 characters", "at least 16"]),
      ([], ["JANK_API_TOKEN": ""], ["JANK_API_TOKEN is set but empty", "unset it to run without a token"]),
      ([], ["JANK_API_BODY_LIMIT": "1MB"], ["JANK_API_BODY_LIMIT must be a whole number of bytes, or of KiB, MiB or GiB", "'1MB'"]),
      (["--body-limit", "64MB"], [:], ["--body-limit must be a whole number of bytes", "'64MB'"]),
      ([], ["JANK_API_BODY_LIMIT": "100"], ["at least 1024 bytes", "got 100"]),
      ([], ["JANK_API_LISTEN": "localhost"], ["JANK_API_LISTEN must be HOST:PORT", "'localhost'"]),
      ([], ["JANK_API_LISTEN": "127.0.0.1:99999"], ["JANK_API_LISTEN must be HOST:PORT"]),
      ([], ["JANK_LOG_LEVEL": "loud"], ["JANK_LOG_LEVEL must be one of", "debug", "'loud'"]),
      ([], ["JANK_SOCKET": ""], ["JANK_SOCKET is set but empty"]),
      (["--listen", "127.0.0.1"], [:], ["--listen must be HOST:PORT"]),
      // Not loopback: a hostname that merely starts with 127., and every interface.
      (["--listen", "127.evil.example:8080"], [:], ["refusing to listen on 127.evil.example:8080 without a token", "JANK_API_TOKEN=", "--token-file"]),
      (["--listen", "0.0.0.0:0"], [:], ["refusing to listen on 0.0.0.0:0 without a token", "JANK_API_TOKEN=", "--token-file"]),
      ([], ["JANK_API_LISTEN": "[::]:0"], ["refusing to listen on [::]:0 without a token", "JANK_API_TOKEN="]),
    ]
    for refused in cases {
      let result = try await runRefusedAPI(refused.arguments, environment: base.merging(refused.environment) { $1 })
      let label = "\(refused.arguments) \(refused.environment)"
      #expect(result.status == 2, "\(label): exit \(result.status), \(result.stderr)")
      for words in refused.message {
        #expect(result.stderr.contains(words), "\(label): no '\(words)' in: \(result.stderr)")
      }
    }
  }

  @Test func theBodyLimitIs1MiBByDefaultAndJANK_API_BODY_LIMITChangesIt() async throws {
    try await Self.withStack { workspace, _, api in
      let limited = try await APIProcess(socket: workspace.socket, environment: ["JANK_API_BODY_LIMIT": "2KiB"])
      defer { limited.terminate() }
      for (port, limit) in [(api.port, 1 << 20), (limited.port, 2048)] {
        // At the limit the body is read (and the unknown id is a 404); one byte more is a 413.
        let at = try await http("POST", port, "/api/plugin/stop", body: paddedBody(id: "dev.test.nobody", size: limit), headers: ["Content-Type": "application/json"])
        #expect(at.status == 404, "\(limit): \(at.text)")
        let over = try await http("POST", port, "/api/plugin/stop", body: paddedBody(id: "dev.test.nobody", size: limit + 1), headers: ["Content-Type": "application/json"])
        #expect(over.status == 413, "\(limit): \(over.text)")
        #expect(over.json?["data"]?["kind"] == "too_large")
        #expect(over.json?["msg"]?.stringValue?.contains("limit of \(limit) bytes") == true, "\(over.text)")
      }
    }
  }

  @Test func theSupervisorMayRestartUnderTheAPI() async throws {
    let workspace = try Workspace()
    try workspace.addHelloWorld("hello", extra: #","auto_start":true"#)
    var supervisor = try await SupervisorProcess(workspace)
    let api = try await APIProcess(socket: workspace.socket)
    defer { api.terminate() }
    let greet: JSONValue = ["id": .string(Self.hello), "method": "greet", "args": ["name": "x"]]
    let first = await eventually(timeout: .seconds(10)) { (try? await http("POST", api.port, "/api/plugin/execute", json: greet).status) == 200 }
    let answer = (try? await http("POST", api.port, "/api/plugin/execute", json: greet).text) ?? "no answer"
    #expect(first, "\(answer)")

    await supervisor.killHard()
    let down = try await http("POST", api.port, "/api/plugin/execute", json: greet)
    #expect(down.status == 503)
    #expect(down.json?["msg"]?.stringValue?.contains("supervisor is unreachable") == true, "\(down.text)")
    let health = try await http("GET", api.port, "/api/health")
    #expect(health.status == 503)
    #expect(health.json?["data"]?["supervisor"] == .null)

    supervisor = try await SupervisorProcess(workspace)
    defer { supervisor.terminate() }
    // The same jank-api process recovers by itself.
    #expect(await eventually(timeout: .seconds(10)) { (try? await http("POST", api.port, "/api/plugin/execute", json: greet).status) == 200 })
    #expect(api.process.isRunning)
  }
}
