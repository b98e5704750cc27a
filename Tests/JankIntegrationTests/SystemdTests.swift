import Foundation
import JankControl
import Testing

/// The supervisor speaks systemd's notify protocol (through libsystemd) to a real
/// NOTIFY_SOCKET, and the units in deploy/ pass `systemd-analyze verify`.
@Suite struct SystemdTests {
  @Test func readyStatusWatchdogAndStoppingReachTheNotifySocket() async throws {
    let workspace = try Workspace()
    try workspace.addHelloWorld("hello", extra: #","auto_start":true"#)
    let notify = try NotifySocket(path: workspace.root + "/notify.sock")
    defer { notify.close() }
    // WATCHDOG_USEC=300 ms: the supervisor must ping every 150 ms.
    let supervisor = try await SupervisorProcess(
      workspace, environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "300000"])

    #expect(await eventually(timeout: .seconds(10)) { notify.messages.contains { $0.hasPrefix("READY=1") } })
    let ready = notify.messages.first { $0.hasPrefix("READY=1") } ?? ""
    // READY comes after auto-start plugins were attempted: the status line counts them.
    #expect(ready.contains("STATUS=1 ready, 0 error, 0 backoff"), "\(notify.messages)")

    let pings = notify.messages.filter { $0 == "WATCHDOG=1" }.count
    try await Task.sleep(for: .seconds(1))
    let later = notify.messages.filter { $0 == "WATCHDOG=1" }.count
    #expect(later - pings >= 4, "\(later - pings) watchdog pings in 1 s with WATCHDOG_USEC=300000")

    // Plugins never see the supervisor's NOTIFY_SOCKET or WATCHDOG_*.
    let client = try await ControlClient.connect(path: workspace.socket)
    let pid = try #require(try await client.call(ControlMethods.get, PluginIDParams(id: "dev.test.hello")).pid)
    let environ = try String(decoding: Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ")), as: UTF8.self)
    #expect(!environ.contains("NOTIFY_SOCKET"))
    #expect(!environ.contains("WATCHDOG_"))
    await client.close()

    // A status change is reported at once.
    kill(pid_t(pid), SIGKILL)
    #expect(await eventually { notify.messages.contains { $0.contains("0 ready, 0 error, 1 backoff") } }, "\(notify.messages.filter { $0.hasPrefix("STATUS") })")
    #expect(await eventually { notify.messages.last { $0.hasPrefix("STATUS") } == "STATUS=1 ready, 0 error, 0 backoff" })

    await supervisor.terminateAndWait()
    #expect(supervisor.process.terminationStatus == 0)
    #expect(notify.messages.contains { $0.hasPrefix("STOPPING=1") }, "\(notify.messages.suffix(3))")
  }

  /// An auto-start plugin that must be built first may take its build_timeout_s before
  /// READY: the supervisor tells systemd so (EXTEND_TIMEOUT_USEC) instead of being killed by
  /// TimeoutStartSec=. Socket-activation variables never reach plugins either.
  @Test func aStartUpBuildExtendsTheStartTimeoutAndListenVariablesNeverReachPlugins() async throws {
    let workspace = try Workspace()
    let build = #"sleep 0.2; cp src/run.sh bin/run && chmod +x bin/run"#
    let id = try workspace.addPlugin(
      "built", script: nil,
      extra: #","auto_start":true,"build_timeout_s":120,"start_timeout_ms":5000,"build":{"command":["sh","-c","\#(build)"],"sources":["src/**"]}"#)
    try FileManager.default.createDirectory(atPath: workspace.plugins + "/built/src", withIntermediateDirectories: true)
    try "#!/bin/sh\nexec '\(Binaries.helloWorld)' \"$@\"\n".write(toFile: workspace.plugins + "/built/src/run.sh", atomically: true, encoding: .utf8)
    let notify = try NotifySocket(path: workspace.root + "/notify.sock")
    defer { notify.close() }
    let supervisor = try await SupervisorProcess(
      workspace, environment: ["NOTIFY_SOCKET": notify.path, "LISTEN_FDS": "0", "LISTEN_PID": "1", "LISTEN_FDNAMES": "none"])
    defer { supervisor.terminate() }

    #expect(await eventually(timeout: .seconds(15)) { notify.messages.contains { $0.hasPrefix("READY=1") } }, "\(notify.messages)")
    let messages = notify.messages
    let extend = messages.firstIndex { $0.hasPrefix("EXTEND_TIMEOUT_USEC=") }
    let ready = messages.firstIndex { $0.hasPrefix("READY=1") }
    // 120 s of build, 5 s of start and 10 s of margin.
    #expect(extend.map { messages[$0] } == "EXTEND_TIMEOUT_USEC=135000000", "\(messages)")
    #expect(extend != nil && ready != nil && extend! < ready!, "\(messages)")
    #expect(messages[ready!].contains("STATUS=1 ready"), "\(messages)")

    let client = try await ControlClient.connect(path: workspace.socket)
    let pid = try #require(try await client.call(ControlMethods.get, PluginIDParams(id: id)).pid)
    await client.close()
    let environ = try String(decoding: Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ")), as: UTF8.self)
    #expect(!environ.contains("LISTEN_"))
    #expect(!environ.contains("NOTIFY_SOCKET"))
  }

  @Test func aStalledEngineStopsTheWatchdogPings() async throws {
    let workspace = try Workspace()
    let notify = try NotifySocket(path: workspace.root + "/notify.sock")
    defer { notify.close() }
    let supervisor = try await SupervisorProcess(
      workspace, environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "300000", "JANK_TEST_STALL_ON_SIGUSR1": "1"])
    defer { supervisor.terminate() }
    #expect(await eventually { notify.messages.filter { $0 == "WATCHDOG=1" }.count >= 3 })
    let stalledAt = Date()
    kill(supervisor.pid, SIGUSR1)  // the engine blocks for 2 s
    try await Task.sleep(for: .seconds(3))
    let pings = notify.received.filter { $0.message == "WATCHDOG=1" && $0.at > stalledAt.addingTimeInterval(-0.5) }.map(\.at)
    // Pings stop while the engine is stalled (a gap of well over the 150 ms interval)…
    let gaps = zip(pings, pings.dropFirst()).map { $1.timeIntervalSince($0) }
    #expect((gaps.max() ?? 0) > 1.5, "largest gap between pings: \(gaps.max() ?? 0) s")
    // …and resume once it answers again.
    #expect(pings.last.map { Date().timeIntervalSince($0) < 0.5 } == true)
  }

  /// install.sh's token: random, 0600, never replaced once made (clients keep working).
  @Test func installMakesARandomPrivateAPITokenOnce() async throws {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
      .appendingPathComponent("deploy/make-api-token.sh").path
    let directory = try Workspace().root
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    var tokens: [String] = []
    for name in ["a", "b"] {
      let file = directory + "/token-" + name
      let made = try await runProgram("/bin/bash", [script, file])
      #expect(made.status == 0, "\(made.stderr)")
      let token = try String(contentsOfFile: file, encoding: .utf8)
      #expect(token.count == 64 && token.allSatisfy(\.isHexDigit), "\(token)")
      var info = stat()
      #expect(stat(file, &info) == 0 && info.st_mode & 0o777 == 0o600)
      let again = try await runProgram("/bin/bash", [script, file])
      #expect(again.status == 0 && again.stdout.contains("keeping"))
      #expect(try String(contentsOfFile: file, encoding: .utf8) == token)
      tokens.append(token)
    }
    #expect(tokens[0] != tokens[1])
  }

  @Test func theDeployUnitsPassSystemdAnalyzeVerify() async throws {
    let deploy = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
      .appendingPathComponent("deploy").path
    let directory = try Workspace().root
    try FileManager.default.createDirectory(atPath: directory + "/jank-supervisor.service.d", withIntermediateDirectories: true)
    var units: [String] = []
    for name in ["jank-supervisor.service", "jank-api.service"] {
      // verify checks that ExecStart exists: point it at the binaries just built.
      let text = try String(contentsOfFile: deploy + "/" + name, encoding: .utf8)
        .replacingOccurrences(of: "/usr/local/bin/", with: Binaries.directory + "/")
      try text.write(toFile: directory + "/" + name, atomically: true, encoding: .utf8)
      units.append(directory + "/" + name)
    }
    // The drop-in install.sh adds on cgroup v1 hosts; verify reads it from beside the unit.
    try FileManager.default.copyItem(
      atPath: deploy + "/jank-supervisor.service.d/cgroup-v1-root.conf", toPath: directory + "/jank-supervisor.service.d/cgroup-v1-root.conf")

    let supervisorUnit = try String(contentsOfFile: deploy + "/jank-supervisor.service", encoding: .utf8)
    for setting in [
      "Type=notify", "WatchdogSec=", "Restart=on-failure", "Delegate=yes", "KillMode=mixed", "StateDirectory=jank", "RuntimeDirectory=jank",
      "NoNewPrivileges=yes", "ProtectSystem=strict",
      // Plugins run as uids of their own: exactly what that takes, and no more.
      "AmbientCapabilities=CAP_SETUID CAP_SETGID CAP_CHOWN CAP_KILL CAP_DAC_OVERRIDE", "CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_CHOWN CAP_KILL CAP_DAC_OVERRIDE",
    ] {
      #expect(supervisorUnit.contains("\n" + setting), "jank-supervisor.service lacks \(setting)")
    }
    // Plugins' cgroups live in the delegated subtree: it must stay writable.
    #expect(!supervisorUnit.contains("\nProtectControlGroups=yes"))
    let apiUnit = try String(contentsOfFile: deploy + "/jank-api.service", encoding: .utf8)
    for setting in [
      "After=jank-supervisor.service", "DynamicUser=yes", "SupplementaryGroups=jank", "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes",
      "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "SystemCallFilter=@system-service", "CapabilityBoundingSet=",
      "LoadCredential=api-token:/etc/jank/api-token", "LimitNOFILE=",
    ] {
      #expect(apiUnit.contains("\n" + setting), "jank-api.service lacks \(setting)")
    }
    // The deployed API never runs open.
    #expect(apiUnit.contains("--token-file %d/api-token"), "jank-api.service starts jank-api without its token")

    let result = try await runProgram("/usr/bin/systemd-analyze", ["verify"] + units)
    #expect(result.status == 0)
    // verify reports problems on stderr but still exits 0 for many of them.
    #expect(result.stderr.isEmpty && result.stdout.isEmpty, "\(result.stdout)\(result.stderr)")

    // The sysusers.d and tmpfiles.d entries, applied to an empty root: the jank user, then
    // the folders the units expect, owned by it.
    let root = directory + "/root"
    try FileManager.default.createDirectory(atPath: root + "/etc", withIntermediateDirectories: true)
    for file in ["passwd", "group", "shadow", "gshadow"] { FileManager.default.createFile(atPath: root + "/etc/" + file, contents: nil) }
    let users = try await runProgram("/usr/bin/systemd-sysusers", ["--root=" + root, deploy + "/jank.sysusers.conf"])
    #expect(users.status == 0, "\(users.stderr)")
    let passwd = try String(contentsOfFile: root + "/etc/passwd", encoding: .utf8)
    let jank = try #require(passwd.split(separator: "\n").first { $0.hasPrefix("jank:") }, "\(passwd)")
    let uid = try #require(UInt32(jank.split(separator: ":")[2]))
    let tmpfiles = try await runProgram("/usr/bin/systemd-tmpfiles", ["--create", "--root=" + root, deploy + "/jank.tmpfiles.conf"])
    #expect(tmpfiles.status == 0 && tmpfiles.stderr.isEmpty, "\(tmpfiles.stderr)")
    for folder in ["/var/lib/jank", "/var/lib/jank/plugins"] {
      var info = stat()
      #expect(stat(root + folder, &info) == 0 && info.st_uid == uid && info.st_mode & 0o777 == 0o750, "\(folder)")
    }
  }
}

/// Receives sd_notify datagrams on a Unix datagram socket, on a thread of its own. The
/// thread owns the descriptor and closes it: closed from another thread between two recvs,
/// its next recv would read whatever socket of the test process took the number.
final class NotifySocket: @unchecked Sendable {
  let path: String
  private let log = TimedMessages()
  private let closing = LockedFlag()

  init(path: String) throws {
    self.path = path
    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
      _ = path.withCString { strncpy(raw.baseAddress!.assumingMemoryBound(to: CChar.self), $0, raw.count - 1) }
    }
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard bound == 0 else {
      let code = errno
      Glibc.close(fd)
      throw APITestError("bind \(path): errno \(code)")
    }
    let log = self.log
    let closing = self.closing
    Thread {
      defer { Glibc.close(fd) }
      var buffer = [UInt8](repeating: 0, count: 4096)
      var poller = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
      while !closing.isSet {
        // A short poll, so that close() is seen without a second thread touching fd.
        guard poll(&poller, 1, 50) > 0 else { continue }
        let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        if n < 0, errno == EINTR || errno == EAGAIN { continue }
        if n <= 0 { return }
        log.append(String(decoding: buffer[0..<n], as: UTF8.self))
      }
    }.start()
  }

  var messages: [String] { log.all.map(\.message) }
  var received: [(at: Date, message: String)] { log.all }

  /// Stops receiving; the thread closes the socket within 50 ms.
  func close() { closing.set() }
}

final class LockedFlag: @unchecked Sendable {
  private let lock = NSLock()
  private var value = false
  func set() { lock.withLock { value = true } }
  var isSet: Bool { lock.withLock { value } }
}

final class TimedMessages: @unchecked Sendable {
  private let lock = NSLock()
  private var items: [(at: Date, message: String)] = []
  func append(_ message: String) { lock.withLock { items.append((Date(), message)) } }
  var all: [(at: Date, message: String)] { lock.withLock { items } }
}
