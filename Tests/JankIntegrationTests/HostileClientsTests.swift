import Foundation
import JankControl
import JankJSON
import Testing

/// Clients that connect and then do nothing: each holds a descriptor and a little memory in
/// the server, and no more. A fresh client is answered at once beside 2 000 of them, at the
/// supervisor's control socket and at jank-api, and neither server's memory runs away.
@Suite struct HostileClientsTests {
  static let idle = 2000

  @Test func twoThousandIdleConnectionsToEachServerLeaveAFreshClientServed() async throws {
    raiseOwnOpenFilesLimit()
    let workspace = try Workspace()
    let id = try workspace.addHelloWorld("hello")
    let supervisor = try await SupervisorProcess(workspace)
    defer { supervisor.terminate() }
    let api = try await APIProcess(socket: workspace.socket)
    defer { api.terminate() }
    let client = try await ControlClient.connect(path: workspace.socket)
    _ = try await client.call(ControlMethods.register, RegisterParams(id: id), timeout: .seconds(30))
    #expect(try await http("GET", api.port, "/api/plugin/get?id=\(id)").status == 200)
    let before = (supervisor: try #require(residentKB(supervisor.pid)), api: try #require(residentKB(api.process.pid)))

    var control: [RawSocket] = []
    for _ in 0..<Self.idle { control.append(try await RawSocket.connect(workspace.socket)) }
    let port = api.port
    let web = try await offPool { try (0..<Self.idle).map { _ in try TCPConnection(port: port) } }

    // Product bound: the connection limits (4096 each) leave room, and an idle connection
    // costs no work; a fresh client's call is milliseconds.
    let begin = ContinuousClock.now
    let fresh = try await ControlClient.connect(path: workspace.socket)
    let info = try await fresh.call(ControlMethods.get, PluginIDParams(id: id), timeout: .seconds(5))
    #expect(info.status == .ready)
    #expect(ContinuousClock.now - begin < .seconds(1), "a fresh control client beside \(Self.idle) idle ones")
    let webBegin = ContinuousClock.now
    let answer = try await http("POST", api.port, "/api/plugin/execute", json: ["id": .string(id), "method": "greet", "args": ["name": "Ada"]])
    #expect(answer.status == 200, "\(answer.text)")
    #expect(ContinuousClock.now - webBegin < .seconds(1), "a fresh HTTP client beside \(Self.idle) idle ones")

    // A few kB each; 64 MB more would mean something per connection is kept that should not be.
    let after = (supervisor: try #require(residentKB(supervisor.pid)), api: try #require(residentKB(api.process.pid)))
    #expect(after.supervisor - before.supervisor < 64 * 1024, "supervisor RSS \(before.supervisor) kB → \(after.supervisor) kB")
    #expect(after.api - before.api < 64 * 1024, "jank-api RSS \(before.api) kB → \(after.api) kB")
    await fresh.close()
    await client.close()
    withExtendedLifetime((control, web)) {}
  }
}

/// 4 000 sockets in this process: the soft limit a shell gives (1024) is too few.
func raiseOwnOpenFilesLimit() {
  var limit = rlimit()
  guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
  limit.rlim_cur = limit.rlim_max
  _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}
