import Foundation
import JankControl
import JankJSON
import Testing

/// A build runs plugin code (a Makefile, a build script), so with a uid of its own a plugin's
/// build runs as that uid too, in a copy of the folder: it cannot change the operator's files,
/// and what it leaves in its copy (links to elsewhere) never makes the supervisor read or
/// write outside it. CI runs as root, so these run in uid mode; elsewhere they fail, saying so.
@Suite struct HostileBuildTests {
  /// The build's own view: its uid, its folder. Everything it writes lands in its copy.
  @Test func aBuildRunsAsThePluginsUidInACopyAndCannotWriteThePluginsFolder() async throws {
    let workspace = try Workspace()
    let bystander = try workspace.addHelloWorld("hello")
    let folder = workspace.plugins + "/builder"
    let build = #"id -u; pwd; echo tampered >> '\#(folder)/src/run.sh' || echo could-not-write; cp src/run.sh bin/run && chmod +x bin/run"#
    let id = try workspace.addPlugin("builder", script: nil, extra: #","build":{"command":["sh","-c","\#(build)"],"sources":["src/**"]}"#)
    try FileManager.default.createDirectory(atPath: folder + "/src", withIntermediateDirectories: true)
    let source = "#!/bin/sh\nexec '\(Binaries.helloWorld)' \"$@\"\n"
    try writeText(source, to: folder + "/src/run.sh")
    let stack = try await HostileStack(workspace, bystander: bystander)
    defer { stack.stop() }

    let info = try await stack.client.call(ControlMethods.register, RegisterParams(id: id), timeout: .seconds(30))
    #expect(info.status == .ready, "\(info.lastError ?? "")")
    let uid = try #require(info.uid, "the supervisor runs as root here, so the plugin must have a uid of its own: \(info.isolationNote ?? "")")
    let log = try await stack.client.call(ControlMethods.logs, LogsParams(id: id, tail: 100, source: "build")).lines
    // stdout and stderr lines arrive through two readers, so their order is not the build's.
    #expect(log.contains("\(uid)") && !log.contains("0"), "the build did not run as the plugin's uid \(uid): \(log)")
    #expect(log.contains(workspace.state + "/builds/\(id)/work"), "the build did not run in its copy: \(log)")
    #expect(log.contains("could-not-write"), "\(log)")
    #expect(try String(contentsOfFile: folder + "/src/run.sh", encoding: .utf8) == source, "the build changed the plugin's folder")
    // The output came back into the folder, the operator's: it serves.
    let greet = try await stack.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "greet", args: ["name": "B"]))
    #expect(greet.data["message"] == "Hello, B!")
    try await stack.expectBystanderServing()
  }

  /// Links a build leaves in its copy: its output as a link to a secret, and a source folder
  /// turned into a link to somewhere else. The supervisor copies neither the secret into the
  /// plugin's folder nor the sources into the other place.
  @Test func linksABuildLeavesInItsCopyAreNeverFollowed() async throws {
    let workspace = try Workspace()
    let bystander = try workspace.addHelloWorld("hello")
    let secret = workspace.root + "/secret.txt"
    try writeText("the operator's secret\n", to: secret)
    chmod(secret, 0o600)
    let thief = try workspace.addPlugin("thief", script: nil, extra: #","build":{"command":["sh","-c","rm -f bin/run; ln -s '\#(secret)' bin/run"]}"#)
    // The planter's first build swaps its copy's src for a link; the second sync must not
    // write the sources through it.
    let elsewhere = workspace.root + "/elsewhere"
    try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
    chmod(elsewhere, 0o777)
    let planter = try workspace.addPlugin(
      "planter", script: "exec '\(Binaries.helloWorld)' \"$@\"",
      extra: #","build":{"command":["sh","-c","[ -L src ] || { rm -rf src && ln -s '\#(elsewhere)' src; }"],"sources":["src/**"]}"#)
    try FileManager.default.createDirectory(atPath: workspace.plugins + "/planter/src", withIntermediateDirectories: true)
    try writeText("source\n", to: workspace.plugins + "/planter/src/main.txt")
    let stack = try await HostileStack(workspace, bystander: bystander)
    defer { stack.stop() }

    let stolen = try await stack.client.call(ControlMethods.register, RegisterParams(id: thief), timeout: .seconds(30))
    #expect(stolen.status == .error)
    #expect(stolen.lastError?.contains("left no regular file at bin/run") == true, "\(stolen.lastError ?? "")")
    let binary = workspace.plugins + "/thief/bin/run"
    #expect((try? String(contentsOfFile: binary, encoding: .utf8))?.contains("secret") != true, "the secret was copied into the plugin's folder")

    let planted = try await stack.client.call(ControlMethods.register, RegisterParams(id: planter), timeout: .seconds(30))
    #expect(planted.status == .ready, "\(planted.lastError ?? "")")
    try writeText("changed\n", to: workspace.plugins + "/planter/src/main.txt")
    _ = try await stack.client.call(ControlMethods.build, PluginIDParams(id: planter), timeout: .seconds(30))
    #expect(try FileManager.default.contentsOfDirectory(atPath: elsewhere).isEmpty, "the sync wrote through the link the build left")
    try await stack.expectBystanderServing()
  }

  /// The example hello-world builds through the repository's package: more than its folder.
  /// With a uid of its own that is refused, saying what to do; the operator's
  /// `--build-in-place` (here JANK_BUILD_IN_PLACE) lets it build in place.
  @Test(arguments: [false, true])
  func aBuildOutsideItsFolderIsRefusedUnlessTheOperatorLetsItBuildInPlace(_ inPlace: Bool) async throws {
    let workspace = try Workspace()
    let bystander = try workspace.addHelloWorld("hello")
    let shared = workspace.root + "/shared"
    try FileManager.default.createDirectory(atPath: shared, withIntermediateDirectories: true)
    let id = try workspace.addPlugin(
      "outside", script: nil,
      extra: #","build":{"command":["sh","-c","printf '#!/bin/sh\\nexec %s \"$@\"\\n' '\#(Binaries.helloWorld)' > ../../shared/run && chmod +x ../../shared/run"],"output":"../../shared/run"}"#)
    let stack = try await HostileStack(workspace, bystander: bystander, environment: inPlace ? ["JANK_BUILD_IN_PLACE": id] : [:])
    defer { stack.stop() }
    let info = try await stack.client.call(ControlMethods.register, RegisterParams(id: id), timeout: .seconds(30))
    if inPlace {
      #expect(info.status == .ready, "\(info.lastError ?? "")")
    } else {
      #expect(info.status == .error)
      #expect(info.lastError?.contains("outside the plugin's folder") == true, "\(info.lastError ?? "")")
      #expect(info.lastError?.contains("--build-in-place \(id)") == true, "\(info.lastError ?? "")")
      #expect(!FileManager.default.fileExists(atPath: shared + "/run"), "the refused build ran anyway")
    }
    try await stack.expectBystanderServing()
  }
}
