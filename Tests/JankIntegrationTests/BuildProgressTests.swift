import Foundation
import JankJSON
import Testing

/// `jankctl build` shows the build's output while it runs, not only once it is over.
@Suite struct BuildProgressTests {
  @Test func jankctlBuildPrintsTheBuildsLinesBeforeTheBuildEnds() async throws {
    let workspace = try Workspace()
    // The build prints a line, then waits for the test to create `go-on` (at most 30 s), so
    // the first line can only be seen early if jankctl streams it. The gate is outside the
    // plugin's folder: the build may run in a copy of it.
    let gate = workspace.root + "/go-on"
    let build = #"echo step one; i=0; while [ ! -f '\#(gate)' ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; echo step two; cp src/run.sh bin/run && chmod +x bin/run"#
    let id = try workspace.addPlugin("streamed", script: nil, extra: #","build":{"command":["sh","-c","\#(build)"],"sources":["src/**"]}"#)
    let folder = workspace.plugins + "/streamed"
    try FileManager.default.createDirectory(atPath: folder + "/src", withIntermediateDirectories: true)
    try "#!/bin/sh\nexec '\(Binaries.helloWorld)' \"$@\"\n".write(toFile: folder + "/src/run.sh", atomically: true, encoding: .utf8)
    try "go".write(toFile: gate, atomically: true, encoding: .utf8)
    let supervisor = try await SupervisorProcess(workspace)
    defer { supervisor.terminate() }
    let registered = try await runProgram(Binaries.jankctl, ["register", id, "--socket", workspace.socket])
    #expect(registered.status == 0, "\(registered.stderr)")
    try FileManager.default.removeItem(atPath: gate)

    let stderrPath = workspace.root + "/jankctl-build.stderr"
    let process = try ChildProcess(Binaries.jankctl, ["build", id, "--socket", workspace.socket], stderr: .file(stderrPath))
    defer { process.terminate() }
    func printed() -> String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    #expect(await eventually(timeout: .seconds(15)) { printed().contains("  | step one") }, "\(printed())")
    #expect(process.isRunning, "jankctl ended before the build was let go")
    #expect(!printed().contains("step two"))

    try "go".write(toFile: gate, atomically: true, encoding: .utf8)
    #expect(await eventually(timeout: .seconds(15)) { !process.isRunning })
    #expect(process.terminationStatus == 0, "\(printed())")
    #expect(printed().contains("  | step two"), "\(printed())")
  }
}
