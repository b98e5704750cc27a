import Foundation
import Testing

/// The benchmark executable runs end to end with tiny counts (figures are not checked:
/// benchmarks are not timed tests), so it cannot rot.
@Suite struct BenchmarkSmokeTests {
  @Test func jankBenchRunsWithTinyCountsBesideTheGoPair() async throws {
    let workspace = try Workspace()
    let host = workspace.root + "/go-host"
    let hostBuild = try await runProgram("/bin/sh", [GoInteropTests.repository + "/Tests/Fixtures/go-host/build.sh", host])
    try #require(hostBuild.status == 0, "\(hostBuild.stderr)")
    _ = try GoInteropTests.copyGoPlugin(into: workspace)
    let goBuild = try await runProgram("/bin/sh", ["-c", "cd '\(workspace.plugins)/hello-world-go' && sh build.sh"])
    try #require(goBuild.status == 0, "\(goBuild.stderr)")

    let result = try await runProgram(
      Binaries.directory + "/jank-bench",
      [
        "--calls", "20", "--spawns", "2", "--crashes", "2", "--swift-plugin", Binaries.helloWorld,
        "--go-plugin", workspace.plugins + "/hello-world-go/bin/hello-world-go", "--go-host", host,
      ])
    #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
    for figure in [
      "supervisor -> Swift plugin (jank-frame), 1 in flight", "supervisor -> Swift plugin (gRPC), 64 in flight",
      "go-plugin Go host -> Go plugin (gRPC), 1 in flight", "jank-frame/Go", "jank-frame/gRPC", "control channel",
      "spawn -> ready", "crash (SIGKILL) -> ready", "allocations per call",
    ] {
      #expect(result.stdout.contains(figure), "missing '\(figure)' in:\n\(result.stdout)")
    }
  }

  /// The scale figures as bench.sh runs them, from a fresh process, with two plugins.
  @Test func jankBenchScaleOnlyRunsWithTwoPlugins() async throws {
    let result = try await runProgram(
      Binaries.directory + "/jank-bench", ["--swift-plugin", Binaries.helloWorld, "--scale-only", "--scale", "2", "--idle-seconds", "1"])
    #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
    #expect(result.stdout.contains("2 plugins: all ready in") && result.stdout.contains("(0 failed), supervisor RSS"), "\(result.stdout)")
  }
}
