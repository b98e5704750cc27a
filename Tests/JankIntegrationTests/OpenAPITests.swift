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
      // The document's example id, so that generated requests also reach a live plugin.
      try workspace.addPlugin("example", id: "dev.jank.plugins.hello-world", script: "exec '\(Binaries.helloWorld)' \"$@\"")
      for id in [APITests.hello, "dev.jank.plugins.hello-world"] {
        _ = try await http("POST", api.port, "/api/plugin/register", json: ["id": .string(id)])
      }
      let checks = [
        "status_code_conformance", "content_type_conformance", "response_headers_conformance",
        "response_schema_conformance", "negative_data_rejection", "positive_data_acceptance",
        "unsupported_method", "allow_header_conformance",
      ]
      let result = try await runProgram(
        "/usr/bin/env",
        [
          "python3", "-m", "schemathesis.cli", "run", "http://127.0.0.1:\(api.port)/api/openapi.json",
          "--checks", checks.joined(separator: ","), "--max-examples", "40", "--seed", "20261125",
          "--workers", "2", "--generation-database", "none", "--no-color", "--request-timeout", "35",
          "--report", "junit", "--report-dir", workspace.root + "/schemathesis",
        ])
      let summary = result.stdout.split(separator: "\n").suffix(40).joined(separator: "\n")
      print(summary)
      #expect(result.status == 0, "\(summary)\n\(result.stderr.suffix(2000))")
    }
  }
}
