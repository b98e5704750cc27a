import Foundation
import JankJSON
import Testing

/// The OpenAPI document is valid, is what the API serves, and the running API keeps to it
/// under property-based fuzzing (schemathesis, from PyPI; scripts/install-deps.sh installs it).
@Suite struct OpenAPITests {
  static let repositoryDocument = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Sources/JankHTTP/openapi.json").path

  @Test func theServedDocumentIsTheRepositoryOneAndValidOpenAPI3() async throws {
    try await APITests.withStack { workspace, _, api in
      let served = try await http("GET", api.port, "/api/openapi.json")
      #expect(served.status == 200)
      #expect(served.body == FileManager.default.contents(atPath: Self.repositoryDocument))
      let file = workspace.root + "/openapi.json"
      try served.body.write(to: URL(fileURLWithPath: file))
      let validation = try await runProgram("/usr/bin/env", ["python3", "-m", "openapi_spec_validator", file])
      #expect(validation.status == 0, "\(validation.stdout) \(validation.stderr)")

      // Every path takes one method; each operation documents the 405 (with Allow) that
      // any other method gets, and the API answers so.
      let document = try #require(served.json)
      #expect(document["components"]?["responses"]?["E405"]?["headers"]?["Allow"] != nil)
      for (path, item) in document["paths"]?.objectValue ?? [:] {
        let (method, operation) = try #require(item.objectValue?.first)
        #expect(item.objectValue?.count == 1, "\(path)")
        #expect(operation["responses"]?["405"] == ["$ref": "#/components/responses/E405"], "\(path)")
        let other = method == "get" ? "DELETE" : "GET"
        let answer = try await http(other, api.port, path)
        #expect(answer.status == 405, "\(other) \(path): \(answer.text)")
        #expect(answer.header("Allow") == method.uppercased(), "\(other) \(path)")
        #expect(answer.json?["data"]?["kind"] == "method_not_allowed", "\(other) \(path)")
      }
    }
  }

  @Test func theDocumentIsWhatItsGeneratorWrites() async throws {
    let script = (Self.repositoryDocument as NSString).deletingLastPathComponent + "/../../scripts/generate-openapi.py"
    let generated = try await runProgram("/usr/bin/env", ["python3", script])
    #expect(generated.status == 0, "\(generated.stderr)")
    #expect(Data(generated.stdout.utf8) == FileManager.default.contents(atPath: Self.repositoryDocument), "run scripts/generate-openapi.py > Sources/JankHTTP/openapi.json")
  }

  /// Generated requests, valid and invalid, against every operation: no status the document
  /// does not list (so never a 500), no body or header that breaks its schema, invalid input
  /// rejected with 4xx, valid input accepted, 405 with Allow for other methods.
  @Test func schemathesisFindsNoResponseOutsideTheContract() async throws {
    try await APITests.withStack { workspace, _, api in
      // Registered plugins for the generated requests to reach: the document's example id,
      // hello-world, and one with a build recipe (so that build can succeed as well as fail).
      try workspace.addPlugin("example", id: "dev.jank.plugins.hello-world", script: "exec '\(Binaries.helloWorld)' \"$@\"")
      let built = try workspace.addPlugin(
        "built", script: nil, extra: #","build":{"command":["sh","-c","cp src/run.sh bin/run && chmod +x bin/run"]}"#)
      try FileManager.default.createDirectory(atPath: workspace.plugins + "/built/src", withIntermediateDirectories: true)
      try "#!/bin/sh\nexec '\(Binaries.helloWorld)' \"$@\"\n".write(toFile: workspace.plugins + "/built/src/run.sh", atomically: true, encoding: .utf8)
      let ids = [APITests.hello, "dev.jank.plugins.hello-world", built]
      for id in ids {
        let registered = try await http("POST", api.port, "/api/plugin/register", json: ["id": .string(id)])
        try #require(registered.status == 200, "\(id): \(registered.text)")
      }
      let config = workspace.root + "/schemathesis.toml"
      try Self.schemathesisConfig(ids: ids, methods: ["greet", "echo", "info"]).write(toFile: config, atomically: true, encoding: .utf8)
      let checks = [
        "status_code_conformance", "content_type_conformance", "response_headers_conformance",
        "response_schema_conformance", "negative_data_rejection", "positive_data_acceptance",
        "unsupported_method", "allow_header_conformance",
      ]
      // One worker: CPython 3.11's ast.parse is not thread-safe (gh-106905), and hypothesis
      // parses its filters' lambdas, so two workers failed now and then with "AST constructor
      // recursion depth mismatch".
      let result = try await runProgram(
        "/usr/bin/env",
        [
          "python3", "-m", "schemathesis.cli", "--config-file", config, "run", "http://127.0.0.1:\(api.port)/api/openapi.json",
          "--checks", checks.joined(separator: ","), "--max-examples", "40", "--seed", "20261125",
          "--workers", "1", "--generation-database", "none", "--no-color", "--request-timeout", "35",
          "--report", "junit", "--report-dir", workspace.root + "/schemathesis",
        ])
      let summary = result.stdout.split(separator: "\n").suffix(40).joined(separator: "\n")
      print(summary)
      #expect(result.status == 0, "\(summary)\n\(result.stderr.suffix(2000))")
      // Generated ids are almost never registered ones: without the dictionary, build and
      // execute were hardly tested past their 404.
      #expect(!result.stdout.contains("Missing test data"), "\(summary)")

      // The plugins were reached: calls answered by a plugin, builds run. (Which plugin is
      // left to the fuzzer: it also reuses ids across operations, unregister included.)
      let metrics = try await http("GET", api.port, "/metrics").text
      #expect(metrics.contains(#"jank_api_requests_total{route="/api/plugin/execute",status="200"}"#), "\(metrics)")
      #expect(ids.contains { metrics.contains(#"jank_plugin_executes_total{plugin_id="\#($0)",outcome="ok"}"#) }, "\(metrics)")
      let builds = ["200", "502"].map { #"jank_api_requests_total{route="/api/plugin/build",status="\#($0)"}"# }
      #expect(builds.contains { metrics.contains($0) }, "\(metrics)")
    }
  }

  /// Execute, build, get and logs draw their id (and execute its method) mostly from the
  /// registered plugins; the rest stay generated, so that unknown and invalid ids are still
  /// tried. Operations that change what is registered or running keep generated ids: a
  /// dictionary there would unregister or stop the plugins under test on most requests.
  static func schemathesisConfig(ids: [String], methods: [String]) -> String {
    func list(_ values: [String]) -> String { "[" + values.map { "\"\($0)\"" }.joined(separator: ", ") + "]" }
    var toml = """
      [dictionaries.plugin-ids]
      values = \(list(ids))

      [dictionaries.plugin-methods]
      values = \(list(methods))

      """
    for path in ["/api/plugin/execute", "/api/plugin/build"] {
      toml += """

        [[operations]]
        include-path = "\(path)"
        parameters = { "body.id" = { dictionary = "plugin-ids", probability = 0.8 }\(path.hasSuffix("execute") ? #", "body.method" = { dictionary = "plugin-methods", probability = 0.7 }"# : "") }

        """
    }
    for path in ["/api/plugin/get", "/api/plugin/logs"] {
      toml += """

        [[operations]]
        include-path = "\(path)"
        parameters = { "query.id" = { dictionary = "plugin-ids", probability = 0.8 } }

        """
    }
    return toml
  }
}
