import Foundation
import JankControl
import Testing

/// A plugin owns its folder and can make anything in it at run time; nothing there may stall
/// or mislead the supervisor.
@Suite struct HostileFolderTests {
  /// `src/a -> .` and `src/b -> .`: followed, two links make 2^N folders to walk (the source
  /// watcher and the fingerprint ran on, holding every control call behind them).
  @Test func aSymlinkLoopInAPluginsSourcesIsNotFollowed() async throws {
    let workspace = try Workspace()
    let hello = try workspace.addHelloWorld("hello")
    let id = try workspace.addPlugin(
      "loop", script: "exec '\(Binaries.helloWorld)' \"$@\"", extra: #","build":{"command":["sh","-c","true"],"sources":["src/**"]}"#)
    let src = workspace.plugins + "/loop/src"
    try FileManager.default.createDirectory(atPath: src + "/deep", withIntermediateDirectories: true)
    try writeText("source\n", to: src + "/main.txt")
    #expect(symlink(".", src + "/a") == 0 && symlink(".", src + "/b") == 0)
    #expect(symlink("..", src + "/deep/up") == 0 && symlink("/", src + "/root") == 0)
    let stack = try await HostileStack(workspace, bystander: hello)
    defer { stack.stop() }
    let client = stack.client

    let clock = ContinuousClock()
    let begin = clock.now
    let info = try await client.call(ControlMethods.register, RegisterParams(id: id), timeout: .seconds(20))
    #expect(info.status == .ready, "\(info.lastError ?? "")")
    #expect(info.folderProblem?.contains("is a symbolic link, which is never followed") == true, "\(info.folderProblem ?? "no problem named")")
    // Product bound: nothing a plugin puts in its folder holds a control call; a walk of
    // three files and two folders is milliseconds (the rest is start_timeout_ms's start).
    #expect(clock.now - begin < .seconds(10))
    let status = clock.now
    _ = try await client.call(ControlMethods.status, NoParams(), timeout: .seconds(5))
    _ = try await client.call(ControlMethods.list, ListParams(), timeout: .seconds(5))
    #expect(clock.now - status < .seconds(2))
    try await stack.expectBystanderServing()

    // The watcher still sees the real folders: a source change rebuilds and swaps the plugin.
    try writeText("changed\n", to: src + "/main.txt")
    #expect(await eventually(timeout: .seconds(15)) {
      (try? await client.call(ControlMethods.get, PluginIDParams(id: id)))?.pid != info.pid
    }, "the plugin was not rebuilt and swapped after its source changed")
  }

  /// Deeper than the walk goes: the plugin still registers and serves, and `get` and `list`
  /// name the folder that was left out.
  @Test func aFolderDeeperThanTheWalkIsNamedAsAProblemAndTheRestWorks() async throws {
    try await withSupervisor { workspace, running in
      let id = try workspace.addPlugin(
        "deep", script: "exec '\(Binaries.helloWorld)' \"$@\"", extra: #","build":{"command":["sh","-c","true"]}"#)
      let deep = workspace.plugins + "/deep/src/" + Array(repeating: "d", count: 40).joined(separator: "/")
      try FileManager.default.createDirectory(atPath: deep, withIntermediateDirectories: true)
      try writeText("source\n", to: deep + "/main.txt")

      let listed = try await running.client.call(ControlMethods.list, ListParams(), timeout: .seconds(10))
      let found = try #require(listed.unregistered.first { $0.id == id })
      #expect(found.problems.contains { $0.contains("folders deep") && $0.contains("src/d/d/") }, "\(found.problems)")

      let info = try await running.client.call(ControlMethods.register, RegisterParams(id: id), timeout: .seconds(20))
      #expect(info.status == .ready, "\(info.lastError ?? "")")
      #expect(info.folderProblem?.contains("more than \(32) folders deep") == true, "\(info.folderProblem ?? "nil")")
      #expect(try await running.client.call(ControlMethods.execute, ExecuteParams(id: id, method: "greet", args: ["name": "deep"])).data["message"] == "Hello, deep!")
    }
  }
}
