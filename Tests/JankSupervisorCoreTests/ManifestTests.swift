import Foundation
import JankSupervisorCore
import Testing

@Suite struct ManifestTests {
  static let valid = """
    {"id":"dev.jank.plugins.hello-world","name":"Hello","version":"1.0.0","type":"handler","binary":"bin/hello",
     "auto_start":true,"restart":{"policy":"always","max_restarts":3},"health":{"interval_ms":500},"x-custom":{"kept":true}}
    """

  @Test func validManifestParsesWithDefaultsAndKeepsUnknownFields() throws {
    let manifest = try PluginManifest.parse(Data(Self.valid.utf8))
    #expect(manifest.id == "dev.jank.plugins.hello-world")
    #expect(manifest.autoStart)
    #expect(manifest.restart.policy == .always)
    #expect(manifest.restart.maxRestarts == 3)
    #expect(manifest.restart.initialDelayMs == 200)
    #expect(manifest.health.intervalMs == 500)
    #expect(manifest.startTimeoutMs == 30_000)
    #expect(manifest.raw["x-custom"] != nil)
  }

  @Test func limitsAreTypedAndUnknownOnesAreNamed() throws {
    let good = #"{"id":"dev.a.b","name":"x","version":"1","type":"handler","binary":"bin/x","limits":{"open_files":64,"cpu_seconds":5,"core_dumps":false,"memory_mb":128,"cpu_percent":50,"pids":32,"address_space_mb":1024}}"#
    let limits = try PluginManifest.parse(Data(good.utf8)).resourceLimits
    #expect(limits.openFiles == 64 && limits.cpuSeconds == 5 && limits.coreDumps == false)
    #expect(limits.memoryMB == 128 && limits.cpuPercent == 50 && limits.pids == 32 && limits.addressSpaceMB == 1024)

    let bad = #"{"id":"dev.a.b","name":"x","version":"1","type":"handler","binary":"bin/x","limits":{"open_files":"lots","memory":64,"pids":0}}"#
    do {
      _ = try PluginManifest.parse(Data(bad.utf8))
      Issue.record("bad limits parsed")
    } catch {
      #expect(error.problems.contains { $0.contains("limits.open_files must be a number") })
      #expect(error.problems.contains { $0.contains("limits.memory is not a known limit") })
      #expect(error.problems.contains { $0.contains("limits.pids must be a whole number from 1") })
    }
  }

  @Test func everyProblemIsReportedNotJustTheFirst() {
    let text = """
      {"id":"Not An Id","name":42,"type":"widget","binary":"../../bin/sh","start_timeout_ms":"soon",
       "restart":{"policy":"sometimes","max_restarts":-1},"auto_start":"yes","transport":"carrier-pigeon"}
      """
    do {
      _ = try PluginManifest.parse(Data(text.utf8))
      Issue.record("an invalid manifest parsed")
    } catch {
      let problems = error.problems
      #expect(problems.contains { $0.contains("id 'Not An Id'") })
      #expect(problems.contains { $0.contains("name must be a string") })
      #expect(problems.contains { $0.contains("version is required") })
      #expect(problems.contains { $0.contains("type 'widget'") })
      #expect(problems.contains { $0.contains("binary") && $0.contains("..") })
      #expect(problems.contains { $0.contains("start_timeout_ms must be a number") })
      #expect(problems.contains { $0.contains("restart.policy 'sometimes'") })
      #expect(problems.contains { $0.contains("restart.max_restarts") })
      #expect(problems.contains { $0.contains("auto_start must be true or false") })
      #expect(problems.contains { $0.contains("transport 'carrier-pigeon' is not one of auto, grpc") })
      #expect(problems.count == 10)
    }
  }

  @Test(arguments: ["not json", "[1,2]", "", "{\"id\": }"])
  func textThatIsNotAJSONObjectIsRejectedWithAReason(_ text: String) {
    #expect(throws: ManifestError.self) { try PluginManifest.parse(Data(text.utf8)) }
  }

  @Test func absoluteBinaryIsRejected() {
    let text = #"{"id":"dev.a.b","name":"n","version":"1","type":"filter","binary":"/bin/sh"}"#
    #expect(throws: ManifestError.invalid(["binary '/bin/sh' must be relative to the plugin folder"])) {
      try PluginManifest.parse(Data(text.utf8))
    }
  }

  @Test(arguments: [
    ("dev.jank.plugins.hello-world", true), ("a.b", true), ("com.example.x1", true),
    ("../../etc/passwd", false), ("dev..x", false), ("Dev.x", false), ("dev", false), ("dev.x/y", false),
    ("dev.-x", false), ("", false), ("dev." + String(repeating: "a", count: 100), false), ("1dev.x", false),
  ])
  func idRule(_ id: String, _ valid: Bool) {
    #expect(PluginManifest.isValidID(id) == valid)
  }
}

@Suite struct HandshakeLineTests {
  @Test func goPluginLinesAreAccepted() throws {
    #expect(try HandshakeLine.parse("1|1|unix|/tmp/p.sock|grpc|") == HandshakeLine(network: "unix", address: "/tmp/p.sock", protocol: "grpc"))
    #expect(try HandshakeLine.parse("1|1|unix|/tmp/p.sock|grpc").address == "/tmp/p.sock")
    #expect(try HandshakeLine.parse("1|1|tcp|127.0.0.1:1234|grpc||true").network == "tcp")
  }

  @Test func jankFrameIsAcceptedOnlyWhenOffered() throws {
    let line = "1|1|unix|/tmp/p.sock|jank-frame|"
    #expect(try HandshakeLine.parse(line, offered: PluginManifest.Transport.auto.offered).protocol == "jank-frame")
    // gRPC is always accepted: a Go plugin ignores the offer.
    #expect(try HandshakeLine.parse("1|1|unix|/tmp/p.sock|grpc|", offered: PluginManifest.Transport.auto.offered).protocol == "grpc")
    #expect(throws: HandshakeError.self) { try HandshakeLine.parse(line, offered: PluginManifest.Transport.grpc.offered) }
    #expect(throws: HandshakeError.self) { try HandshakeLine.parse(line) }
  }

  @Test(arguments: [
    ("garbage", "field"), ("2|1|unix|/x|grpc|", "core protocol version"), ("1|2|unix|/x|grpc|", "app protocol version"),
    ("1|1|unix|/x|netrpc|", "protocol 'netrpc'"), ("1|1|udp|/x|grpc|", "network 'udp'"), ("1|1|unix||grpc|", "address is empty"),
    ("1|1|tcp|10.0.0.1:80|grpc|", "not on loopback"),
  ])
  func badLinesNameTheProblemAndQuoteTheLine(_ line: String, _ problem: String) {
    do {
      _ = try HandshakeLine.parse(line)
      Issue.record("accepted \(line)")
    } catch {
      #expect(error.description.contains(problem))
      #expect(error.description.contains(line))
    }
  }
}
