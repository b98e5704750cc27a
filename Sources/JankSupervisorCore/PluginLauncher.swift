import Foundation
import Glibc
import JankControl
import JankFrame
import Logging
import NIOCore
import NIOPosix

/// A plugin process that completed its handshake and answers over its connection.
struct LaunchedPlugin: Sendable {
  var pid: pid_t
  var connection: any PluginConnection
  var handshake: HandshakeLine
  /// The process's own cgroup, or nil with the reason in `limitsNote`.
  var cgroup: PluginCgroup?
  var limitsNote: String?
}

/// Why a launch failed, with the exit classification for `last_exit`.
struct LaunchFailure: Error, CustomStringConvertible {
  var reason: LastExit.Reason
  var exit: ExitStatus?
  var message: String

  var description: String { message }
}

/// Spawns a plugin with the go-plugin environment, reads its handshake within the start
/// timeout and connects to it. Replaceable by a launcher that applies limits.
protocol PluginLaunching: Sendable {
  func launch(manifest: PluginManifest, directory: String, socketDirectory: String, identity: PluginIdentity?, log: PluginLog) async throws(LaunchFailure) -> LaunchedPlugin
}

struct PluginLauncher: PluginLaunching {
  /// Where plugin cgroups go (detected once by the supervisor).
  var cgroups: CgroupHierarchy = .unavailable(reason: "cgroups are not used")
  var eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton

  /// Variables never passed to plugins: they belong to the supervisor's own service manager.
  static let privateVariablePrefixes = ["NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_", "JANK_API_TOKEN"]
  /// All a plugin sees of the supervisor's environment; anything else there (a token, a
  /// database password in the unit's Environment=) stays the supervisor's.
  /// JANK_FRAME_SPIN_US=0 turns the jank-frame busy-poll off in plugins too (docs/jank-frame.md).
  static let passedThrough = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "JANK_FRAME_SPIN_US"]

  static func environment(for manifest: PluginManifest, socketDirectory: String) -> [String: String] {
    let inherited = ProcessInfo.processInfo.environment
    var env: [String: String] = [:]
    for key in passedThrough {
      if let value = inherited[key] { env[key] = value }
    }
    env["PATH"] = env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    env["TMPDIR"] = socketDirectory
    env["JANK_PLUGIN"] = "jank-plugin"
    env["JANK_PLUGIN_ID"] = manifest.id
    env["PLUGIN_PROTOCOL_VERSIONS"] = "1"
    // Jank SDK plugins answer with the first they serve; go-plugin plugins ignore it (design §3).
    env["JANK_PLUGIN_PROTOCOLS"] = manifest.transport.offered.joined(separator: ",")
    env["PLUGIN_MIN_PORT"] = "10000"
    env["PLUGIN_MAX_PORT"] = "25000"
    env["PLUGIN_UNIX_SOCKET_DIR"] = socketDirectory
    // Swift's backtracer takes seconds on a crash; restarts must be fast.
    env["SWIFT_BACKTRACE"] = "enable=no"
    return env.filter { key, _ in !privateVariablePrefixes.contains { key.hasPrefix($0) } }
  }

  private enum StartEvent: Sendable {
    case line(String)
    case endOfOutput
    case timedOut
    case cancelled
  }

  /// A cancelled launch (a stop or restart arrived) ends with this reason, its process killed.
  static let cancelledMessage = "the start was cancelled: the plugin was stopped or restarted before it finished starting"

  /// How long past the start deadline the connect may take: the one health check that a
  /// handshake printed at the last moment still gets (PluginConnection's 100 ms floor).
  static let lastCheckGrace: Duration = .milliseconds(100)
  /// How long a handshake already in the pipe at the deadline may take to be read.
  static let lateReaderGrace: Duration = .seconds(2)

  /// Bytes waiting in a pipe we read (the descriptor is the reader's, and open while it is).
  static func unreadBytes(_ fd: Int32) -> Int32 {
    var unread: Int32 = 0
    return ioctl(fd, UInt(FIONREAD), &unread) == 0 ? unread : 0
  }

  func launch(
    manifest: PluginManifest, directory: String, socketDirectory: String, identity: PluginIdentity?, log: PluginLog
  ) async throws(LaunchFailure) -> LaunchedPlugin {
    let executable = directory + "/" + manifest.binary
    // Opened once: the digest is checked on, and the child runs, this very file.
    let binary = open(executable, O_RDONLY | O_CLOEXEC)
    guard binary >= 0 else {
      throw LaunchFailure(reason: .handshakeFailed, exit: nil, message: "could not start \(executable): open failed: \(String(cString: strerror(errno)))")
    }
    defer { close(binary) }
    try await Self.checkDigest(manifest: manifest, binary: binary, path: executable)
    var request = SpawnRequest(executable: executable)
    request.executableFD = binary
    request.identity = identity.map { ($0.uid, $0.gid) }
    request.workingDirectory = directory
    request.environment = Self.environment(for: manifest, socketDirectory: socketDirectory)
    request.rlimits = manifest.resourceLimits.rlimits
    // A cgroup that cannot be made is not fatal: the plugin runs with rlimits only.
    var cgroup: PluginCgroup?
    var limitsNote: String?
    switch cgroups {
    case .unavailable(let reason):
      limitsNote = reason
    default:
      do {
        cgroup = try PluginCgroup.create(name: "\(manifest.id).\(UUID().uuidString.prefix(8).lowercased())", in: cgroups, limits: manifest.resourceLimits)
        request.cgroupProcsFDs = try cgroup?.openProcsFiles() ?? []
      } catch {
        cgroup?.remove()
        cgroup = nil
        limitsNote = error.message
        log.append("jank: plugin runs without its cgroup: \(error.message)", stream: "supervisor")
      }
    }
    let process: SpawnedProcess
    do {
      defer { request.cgroupProcsFDs.forEach { close($0) } }
      process = try await ProcessSpawner.spawn(request)
    } catch {
      cgroup?.remove()
      var message = "\(error)"
      if let identity, let spawn = error as? SpawnError, spawn.errno == EACCES {
        message += "; the plugin runs as uid \(identity.uid), which may not run it: make it readable and executable by others (chmod o+rx)"
      }
      throw LaunchFailure(reason: .handshakeFailed, exit: nil, message: message)
    }

    // The plugin's clock starts once it exists. Forks are made one at a time, and with many
    // plugins starting at once (or a loaded machine) the queue took over a second: counted
    // from before it, an 800 ms start_timeout_ms failed plugins that started in 10 ms.
    let deadline = ContinuousClock.now + .milliseconds(manifest.startTimeoutMs)
    let handshakeLine = OneShot<String?>()
    let stderrEnded = OneShot<Void>()
    do {
      try await OutputReader.start(
        fd: process.stdout,
        onLine: { line in
          // The first stdout line is the handshake; later lines are log.
          if handshakeLine.isDelivered { log.append(line, stream: "stdout") } else { handshakeLine.deliver(line) }
        },
        onEnd: { handshakeLine.deliver(nil) })
      try await OutputReader.start(fd: process.stderr, onLine: { log.append($0, stream: "stderr") }, onEnd: { stderrEnded.deliver(()) })
    } catch {
      kill(-process.pid, SIGKILL)
      cgroup?.remove()
      throw LaunchFailure(reason: .handshakeFailed, exit: nil, message: "could not read the plugin's output: \(error)")
    }

    func waitForLine(until deadline: ContinuousClock.Instant) async -> StartEvent {
      switch await handshakeLine.wait(until: deadline) {
      case .some(.some(let line)): .line(line)
      case .some(.none): .endOfOutput
      case .none: Task.isCancelled ? .cancelled : .timedOut
      }
    }
    var event = await waitForLine(until: deadline)
    // Bytes in the pipe at the deadline were written in time: it is this side's reader that
    // is late (a loaded machine), and the plugin must not fail for it.
    if case .timedOut = event, Self.unreadBytes(process.stdout) > 0 {
      event = await waitForLine(until: .now + Self.lateReaderGrace)
    }

    func fail(_ reason: LastExit.Reason, _ message: String) async -> LaunchFailure {
      kill(-process.pid, SIGKILL)
      let status = await ProcessReaper.shared.waitForExit(pid: process.pid)
      ProcessReaper.shared.forget(pid: process.pid)
      cgroup?.remove()
      return LaunchFailure(reason: reason, exit: status, message: message)
    }

    switch event {
    case .cancelled:
      throw await fail(.stopped, Self.cancelledMessage)
    case .timedOut:
      // Where the silent process is (its program, state and kernel wait channel) tells a
      // plugin stuck in its own start-up from one that never reached exec.
      let program = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(process.pid)/exe")) ?? "?"
      let state = Self.procState(process.pid) + "; " + Self.stdoutState(process.pid)
      let tail = Self.quotedTail(log)
      throw await fail(
        .startTimeout,
        "the plugin printed no handshake line within start_timeout_ms (\(manifest.startTimeoutMs) ms); a go-plugin plugin prints CORE|APP|NETWORK|ADDR|PROTOCOL on stdout first (process \(process.pid): \(program), \(state))"
          + (tail.isEmpty ? "" : "; its last log lines: \(tail)"))
    case .endOfOutput:
      // Closed stdout without a line: the plugin exited (or closed stdout) before its handshake.
      let status = await ProcessReaper.shared.waitForExit(pid: process.pid, within: .seconds(1))
      let how = status.map { "\($0)" } ?? "closed its stdout"
      // stderr is read by a reader of its own: what the plugin wrote there before it exited
      // (its reason, usually) may not be read yet when stdout's end arrives.
      if status != nil { _ = await stderrEnded.wait(until: .now + .milliseconds(500)) }
      let tail = Self.quotedTail(log)
      // Killed by the OOM killer while starting: a memory limit problem, not a bad plugin.
      if status == .signaled(SIGKILL), let cgroup, cgroup.oomKills > 0 {
        var failure = await fail(
          .oomKilled,
          "the plugin went past its memory_mb limit (\(manifest.resourceLimits.memoryMB ?? 0) MB) before its handshake and the kernel's OOM killer killed it; raise memory_mb")
        failure.exit = status
        throw failure
      }
      var failure = await fail(.handshakeFailed, "the plugin \(how) before printing its handshake line" + (tail.isEmpty ? "" : "; its last log lines: \(tail)"))
      failure.exit = status ?? failure.exit
      throw failure
    case .line(let line):
      let handshake: HandshakeLine
      do {
        handshake = try HandshakeLine.parse(line, offered: manifest.transport.offered)
      } catch {
        throw await fail(.handshakeFailed, "\(error)")
      }
      // The address is plugin output: it must be this plugin's own socket, not a sibling's.
      let verifiedSocket: CInt?
      do {
        verifiedSocket = try await HandshakePeer.verify(handshake, socketDirectory: socketDirectory, plugin: process.pid, identity: identity, deadline: deadline)
      } catch {
        if Task.isCancelled { throw await fail(.stopped, Self.cancelledMessage) }
        throw await fail(error.timedOut ? .startTimeout : .handshakeFailed, "\(error)")
      }
      // Connecting may take until the deadline (a plugin that never answers its health
      // check); it runs in a task of its own so that a cancelled launch does not wait for it.
      let connected = OneShot<Result<any PluginConnection, any Error>>()
      let connecting = Task { [eventLoopGroup] in
        do {
          let connection: any PluginConnection
          if handshake.protocol == Frame.protocolName {
            connection = try await FramePluginConnection.connect(handshake: handshake, deadline: deadline, group: eventLoopGroup, connectedSocket: verifiedSocket)
          } else {
            // gRPC makes connections of its own; the one that proved the peer is closed.
            if let verifiedSocket { close(verifiedSocket) }
            connection = try await GRPCPluginConnection.connect(handshake: handshake, deadline: deadline)
          }
          connected.deliver(.success(connection))
        } catch {
          connected.deliver(.failure(error))
        }
      }
      // The start timeout is this launcher's own bound, not the transport's: a gRPC call
      // with waitForReady fires its own deadline late under load (seen 4.5 s past an
      // 800 ms start timeout). The one check a late handshake still gets has 100 ms.
      switch await connected.wait(until: deadline + Self.lastCheckGrace) {
      case .some(.success(let connection)):
        return LaunchedPlugin(pid: process.pid, connection: connection, handshake: handshake, cgroup: cgroup, limitsNote: limitsNote)
      case .some(.failure(let error)):
        throw await fail(ContinuousClock.now >= deadline ? .startTimeout : .handshakeFailed, "\(error)")
      case .none:
        // Cancelled or out of time: the connect gives up, and the connection, should it
        // still come, is closed.
        let cancelled = Task.isCancelled
        connecting.cancel()
        Task { if case .success(let connection)? = await connected.wait() { connection.close() } }
        if cancelled { throw await fail(.stopped, Self.cancelledMessage) }
        throw await fail(
          .startTimeout,
          "the plugin printed its handshake but did not report healthy over \(handshake.protocol) at \(handshake.address) within start_timeout_ms (\(manifest.startTimeoutMs) ms)")
      }
    }
  }
}

extension PluginLauncher {
  /// plugin.json's `sha256` is checked before every exec (start, restart, hot swap), from the
  /// digest cache when the file's identity, size and times are unchanged.
  static func checkDigest(manifest: PluginManifest, binary: Int32, path: String) async throws(LaunchFailure) {
    guard let expected = manifest.sha256?.lowercased() else { return }
    let actual = await BlockingIO.run { FileDigests.shared.digest(ofOpenFile: binary, path: path)?.1 }
    guard actual != expected else { return }
    throw LaunchFailure(
      reason: .digestMismatch, exit: nil,
      message: "the binary \(manifest.binary) \(actual.map { "has SHA-256 \($0)" } ?? "cannot be read as a regular file"), but plugin.json's sha256 is \(expected), so it was not started: "
        + "the binary changed since the digest was written. If this binary is the one you trust, put its digest (`sha256sum \(manifest.binary)`) in plugin.json, then `jankctl start` the plugin")
  }

  /// The plugin's last five log lines for an error, at most 200 characters each: the error
  /// is shown by every `list`, `get` and API call.
  static func quotedTail(_ log: PluginLog) -> String {
    log.tail(5).map { $0.count > 200 ? $0.prefix(200) + "…" : $0 }.joined(separator: " | ")
  }

  /// Where the silent process's stdout goes and whether this process still holds the pipe's
  /// read end with bytes unread: a line that was written but never read is this side's fault.
  static func stdoutState(_ pid: pid_t) -> String {
    guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/1") else { return "stdout unknown" }
    let mine = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    for entry in mine {
      guard let fd = Int32(entry), (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(entry)")) == target else { continue }
      var unread: Int32 = 0
      _ = ioctl(fd, UInt(FIONREAD), &unread)
      return "stdout \(target), read end here as fd \(fd) with \(unread) bytes unread"
    }
    return "stdout \(target), no read end of it open here"
  }

  /// "state S, waiting in do_epoll_wait" from /proc, for start-up errors, then where each
  /// of its threads waits: a Swift program's main thread always parks in `sigsuspend`
  /// (libdispatch), so the main thread alone does not tell where a start-up is stuck.
  static func procState(_ pid: pid_t) -> String {
    let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    let state = stat.lastIndex(of: ")").map { String(stat[$0...].dropFirst(2).prefix(1)) } ?? "?"
    let wchan = (try? String(contentsOfFile: "/proc/\(pid)/wchan", encoding: .utf8)) ?? "?"
    var text = "state \(state), waiting in \(wchan.isEmpty ? "?" : wchan)"
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    if tasks.count > 1 {
      let threads = tasks.sorted().prefix(16).map { task -> String in
        let comm = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        let wchan = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/wchan", encoding: .utf8)) ?? "?"
        return "\(comm) in \(wchan.isEmpty ? "?" : wchan)"
      }
      text += "; threads: " + threads.joined(separator: ", ")
    }
    return text
  }
}
