import Foundation
import Glibc
import JankPlugin
import Logging
import Synchronization

/// A plugin that misbehaves on request, for tests of deadlines, concurrency, crashes and logs.
struct FaultPlugin: Plugin {
  func execute(method: String, args: [String: JSONValue]) async throws -> [String: JSONValue] {
    switch method {
    case "sleep":
      let ms = Int(args["ms"]?.numberValue ?? 1000)
      // Shows that the call reached the plugin (a test can wait for that instead of guessing).
      if let started = args["started_marker"]?.stringValue { appendLine(to: started, "started") }
      do {
        try await Task.sleep(for: .milliseconds(ms))
      } catch {
        // Shows that the host's cancellation reached this task.
        if let marker = args["marker"]?.stringValue { appendLine(to: marker, "cancelled") }
        throw error
      }
      return ["slept_ms": .number(Double(ms))]
    case "crash":
      // Crash mid-call: the caller must get an error that names the crash.
      kill(getpid(), SIGKILL)
      return [:]
    case "exit":
      exit(Int32(args["code"]?.numberValue ?? 1))
    case "log":
      let logger = Logger(label: "fault")
      for i in 0..<Int(args["lines"]?.numberValue ?? 1) {
        logger.warning("line \(i)", metadata: ["n": "\(i)"])
      }
      return [:]
    case "spawn-stubborn-child":
      // A child in the plugin's process group that ignores SIGTERM: only the group SIGKILL
      // at the end of the stop sequence removes it.
      var pid: pid_t = 0
      let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sh"), strdup("-c"), strdup("trap '' TERM; exec sleep 600"), nil]
      defer { argv.forEach { free($0) } }
      let rc = posix_spawn(&pid, "/bin/sh", nil, nil, argv, environ)
      guard rc == 0 else { throw PluginError("posix_spawn failed: \(rc)") }
      return ["pid": .number(Double(pid))]
    case "ignore-term":
      // From now on only SIGKILL ends this plugin.
      signal(SIGTERM, SIG_IGN)
      return [:]
    case "drop-connection":
      // The plugin's connection breaks while the process lives on for `exit_after_ms`: the
      // socket file is removed (reconnects are refused) and every open connection is shut
      // down. This call itself was delivered; `marker` records each time it ran.
      if let marker = args["marker"]?.stringValue { appendLine(to: marker, "drop-connection \(getpid())") }
      dropConnections()
      let delay = UInt32(args["exit_after_ms"]?.numberValue ?? 1500)
      Thread.detachNewThread {
        usleep(delay * 1000)
        _exit(3)
      }
      return [:]
    case "hang":
      // Blocks its thread for good, without looking at cancellation: only a kill ends it.
      while true { sleep(60) }
    case "flood":
      // Megabytes on stdout and stderr, in one burst.
      let chunk = [UInt8](repeating: UInt8(ascii: "x"), count: 64 * 1024 - 1) + [UInt8(ascii: "\n")]
      for _ in 0..<Int((args["mb"]?.numberValue ?? 1) * 16) {
        _ = chunk.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
        _ = chunk.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
      }
      return [:]
    case "abort":
      abort()
    case "segfault":
      raise(SIGSEGV)
      return [:]
    case "open-files":
      // Opens /dev/null `count` times (closing them after): how many opened, and the errno
      // of the first failure.
      var opened: [Int32] = []
      var failure: Int32 = 0
      for _ in 0..<Int(args["count"]?.numberValue ?? 10) {
        let fd = open("/dev/null", O_RDONLY)
        if fd < 0 {
          failure = errno
          break
        }
        opened.append(fd)
      }
      opened.forEach { close($0) }
      return ["opened": .number(Double(opened.count)), "errno": .number(Double(failure))]
    case "allocate":
      // Allocates and touches `mb` megabytes, a megabyte at a time, and keeps them.
      let mb = Int(args["mb"]?.numberValue ?? 16)
      for _ in 0..<mb {
        let block = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        memset(block, 1, 1 << 20)
        let address = Int(bitPattern: block)
        Hoard.blocks.withLock { $0.append(address) }
      }
      return ["allocated_mb": .number(Double(mb))]
    case "fork-bomb":
      // Forks up to `count` sleeping children (in the plugin's group, so stop kills them);
      // reports how many forks succeeded before the first failure.
      var started = 0
      var failure: Int32 = 0
      for _ in 0..<Int(args["count"]?.numberValue ?? 10) {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sleep"), strdup("600"), nil]
        defer { argv.forEach { free($0) } }
        let rc = posix_spawn(&pid, "/bin/sleep", nil, nil, argv, environ)
        if rc != 0 {
          failure = rc
          break
        }
        started += 1
      }
      return ["started": .number(Double(started)), "errno": .number(Double(failure))]
    case "spin":
      // Burns CPU for `ms` of wall time.
      let end = ContinuousClock.now + .milliseconds(Int(args["ms"]?.numberValue ?? 1000))
      var x: UInt64 = 0
      while ContinuousClock.now < end { x = x &* 6364136223846793005 &+ 1 }
      return ["x": .number(Double(x % 1000))]
    case "probe-socket":
      // An attack on a sibling: connect to its socket and see whether it hangs up on us
      // (it refuses whoever is not its host) or waits for our first frame.
      return try probeSocket(args["path"]?.stringValue ?? "", waitMs: Int32(args["wait_ms"]?.numberValue ?? 1000))
    case "version":
      return ["version": .string(ProcessInfo.processInfo.environment["FAULT_VERSION"] ?? "none")]
    case "pid":
      return ["pid": .number(Double(getpid()))]
    case "echo":
      return args
    default:
      throw PluginError("unknown method: \(method)")
    }
  }
}

/// Connects to the Unix socket at `path` and waits up to `waitMs` for the other end to close.
func probeSocket(_ path: String, waitMs: Int32) throws -> [String: JSONValue] {
  let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
  guard fd >= 0 else { throw PluginError("socket() failed") }
  defer { close(fd) }
  var address = sockaddr_un()
  address.sun_family = sa_family_t(AF_UNIX)
  withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8.prefix(107)) + [0]) }
  let connected = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
  }
  guard connected == 0 else { return ["connected": false, "error": .string(String(cString: strerror(errno)))] }
  var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
  var closed = false
  if poll(&poller, 1, waitMs) > 0 {
    var byte: UInt8 = 0
    closed = read(fd, &byte, 1) <= 0
  }
  return ["connected": true, "closed_by_peer": .bool(closed)]
}

/// Memory the `allocate` method keeps.
enum Hoard {
  static let blocks = Mutex<[Int]>([])
}

/// Removes the socket file and shuts down every connected (non-listening) socket.
func dropConnections() {
  if let directory = ProcessInfo.processInfo.environment["PLUGIN_UNIX_SOCKET_DIR"],
    let names = try? FileManager.default.contentsOfDirectory(atPath: directory)
  {
    for name in names where name.hasSuffix(".sock") { unlink(directory + "/" + name) }
  }
  for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
    guard let fd = Int32(name) else { continue }
    var listening: Int32 = 0
    var length = socklen_t(MemoryLayout<Int32>.size)
    guard getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) == 0, listening == 0 else { continue }
    shutdown(fd, Int32(SHUT_RDWR))
  }
}

func appendLine(to path: String, _ line: String) {
  let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
  guard fd >= 0 else { return }
  _ = (line + "\n").withCString { write(fd, $0, strlen($0)) }
  close(fd)
}

/// `FAULT_BAD_HANDSHAKE_ON_START=N` with `FAULT_STATE_DIR`: the Nth start (counted in a
/// file) prints garbage instead of a handshake, then lingers.
func badHandshakeIfItsTime() {
  let environment = ProcessInfo.processInfo.environment
  guard let n = environment["FAULT_BAD_HANDSHAKE_ON_START"].flatMap(Int.init), let dir = environment["FAULT_STATE_DIR"] else { return }
  let counter = dir + "/starts"
  let starts = ((try? String(contentsOfFile: counter, encoding: .utf8)).flatMap { Int($0) } ?? 0) + 1
  try? String(starts).write(toFile: counter, atomically: true, encoding: .utf8)
  guard starts % n == 0 else { return }
  let line = "this is not a handshake (start \(starts))\n"
  _ = line.withCString { write(1, $0, strlen($0)) }
  sleep(30)
  exit(0)
}

/// `FAULT_SLOW_START_MS=N`: a slow start-up, N ms before the handshake line (the pid goes
/// to `FAULT_PID_FILE` first, so a test can check the process is gone after a cancelled start).
func slowStartIfAsked() {
  let environment = ProcessInfo.processInfo.environment
  guard let ms = environment["FAULT_SLOW_START_MS"].flatMap(Int.init) else { return }
  if let pidFile = environment["FAULT_PID_FILE"] { appendLine(to: pidFile, "\(getpid())") }
  usleep(UInt32(clamping: ms * 1000))
}

/// `FAULT_ALLOCATE_MB_AT_START=N`: touches N MB before the handshake (an OOM kill at start).
func allocateAtStartIfAsked() {
  guard let mb = ProcessInfo.processInfo.environment["FAULT_ALLOCATE_MB_AT_START"].flatMap(Int.init) else { return }
  for _ in 0..<mb {
    let block = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 4096)
    memset(block, 1, 1 << 20)
    Hoard.blocks.withLock { $0.append(Int(bitPattern: block)) }
  }
}

badHandshakeIfItsTime()
slowStartIfAsked()
allocateAtStartIfAsked()
await serve(FaultPlugin())
