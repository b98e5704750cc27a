import Foundation
import JankControl
import Testing

/// A supervisor started with stdin, stdout and stderr closed (some service managers and
/// `daemon <&- >&- 2>&-` do this) opens /dev/null on them first: otherwise its first sockets
/// and pipes take the numbers 0-2, its log lines land in them, and a plugin's stdout pipe
/// dup2'ed onto 1 could be overwritten by the one meant for 0.
@Suite struct ClosedStandardDescriptorsTests {
  @Test func aSupervisorStartedWithoutStandardDescriptorsRunsPluginsAsUsual() async throws {
    let workspace = try Workspace()
    let id = try workspace.addHelloWorld("hello")
    let supervisor = try ChildProcess(
      "/bin/sh", ["-c", #"exec "$0" --plugins-dir "$1" --state-dir "$2" <&- >&- 2>&-"#, Binaries.supervisor, workspace.plugins, workspace.state])
    defer { supervisor.terminate() }
    let socket = workspace.socket
    #expect(await eventually(timeout: .seconds(15)) { FileManager.default.fileExists(atPath: socket) })
    let client = try await ControlClient.connect(path: workspace.socket)
    defer { Task { await client.close() } }

    let info = try await client.call(ControlMethods.register, RegisterParams(id: id), timeout: .seconds(30))
    #expect(info.status == .ready, "\(info.lastError ?? "")")
    let result = try await client.call(ControlMethods.execute, ExecuteParams(id: id, method: "greet", args: ["name": "Ada"]), timeout: .seconds(5))
    #expect(result.data["message"] == "Hello, Ada!")
    for fd in 0...2 {
      let target = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(supervisor.pid)/fd/\(fd)")
      #expect(target == "/dev/null", "the supervisor's fd \(fd) is \(target)")
    }
    // The plugin got its own pipes on 1 and 2 and /dev/null on 0, whatever the parent had.
    let plugin = try #require(info.pid)
    #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(plugin)/fd/0") == "/dev/null")
    for fd in 1...2 {
      #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(plugin)/fd/\(fd)").hasPrefix("pipe:"))
    }
  }
}
