import CJankShim
import Foundation
import Glibc

/// A program's exit code and output. A program killed by signal N reports 128 + N, as a shell does.
struct ProgramResult: Sendable {
  var status: Int32
  var stdout: String
  var stderr: String
}

struct ProgramRunError: Error, CustomStringConvertible {
  var path: String
  var step: String
  var code: Int32
  var description: String { "could not run \(path): \(step): \(String(cString: strerror(code)))" }
}

/// Runs a program to completion on a thread of its own (never one of the cooperative pool's)
/// and returns its exit code and both outputs, read together so that neither pipe can fill.
///
/// posix_spawn and raw pipes rather than Foundation's `Process` and `Pipe`: corelibs-foundation
/// has closed descriptors twice and lost a pipe's output under concurrency
/// (swiftlang/swift#57827), and in the test process a stray close can hit a socket or pipe of
/// an in-process supervisor beside the test. A `jankctl stop` that exited 0 was once read as
/// printing nothing at all.
func runProgram(_ path: String, _ arguments: [String], environment: [String: String]? = nil) async throws -> ProgramResult {
  try await withCheckedThrowingContinuation { continuation in
    Thread { continuation.resume(with: Result { try runProgramNow(path, arguments, environment) }) }.start()
  }
}

private func runProgramNow(_ path: String, _ arguments: [String], _ environment: [String: String]?) throws -> ProgramResult {
  let out = try OutputPipe(path: path)
  let err = try OutputPipe(path: path)
  let pid = try spawn(path, arguments, environment: environment, stdout: .fd(out.write), stderr: .fd(err.write))
  out.closeWriteEnd(); err.closeWriteEnd()
  let (stdout, stderr) = readBoth(out.read, err.read)
  out.closeReadEnd(); err.closeReadEnd()
  let exit = waitForExit(pid)
  // Only another waitpid on our pid can take its status (pid reuse in some reaper): say so
  // rather than reading the lost status as exit 0.
  if let lost = exit.lost { throw ProgramRunError(path: path, step: "waitpid(\(pid)) after its output ended", code: lost) }
  return ProgramResult(status: exit.shellStatus, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
}

/// Where a child's stdout or stderr goes.
enum ChildOutput {
  case null
  case file(String)
  case fd(Int32)
}

/// A pipe with close-on-exec ends, closed by hand exactly once.
final class OutputPipe: @unchecked Sendable {
  let read: Int32
  let write: Int32
  private var readOpen = true
  private var writeOpen = true

  init(path: String) throws {
    var fds: [Int32] = [-1, -1]
    guard jank_pipe_cloexec(&fds) == 0 else { throw ProgramRunError(path: path, step: "pipe2", code: errno) }
    read = fds[0]
    write = fds[1]
  }

  func closeWriteEnd() { if writeOpen { writeOpen = false; close(write) } }
  func closeReadEnd() { if readOpen { readOpen = false; close(read) } }
  deinit { closeWriteEnd(); closeReadEnd() }
}

/// How a child ended, from waitpid's status.
struct ChildExit: Sendable, Equatable {
  var code: Int32?
  var signal: Int32?
  /// waitpid's errno when the status could not be read (ECHILD: someone else reaped it).
  var lost: Int32?
  init(lost: Int32) { self.lost = lost }
  init(waitStatus status: Int32) {
    let signal = status & 0x7f
    if signal == 0 { code = (status >> 8) & 0xff } else { self.signal = signal }
  }
  /// The exit code, or 128 + the signal as a shell says it.
  var shellStatus: Int32 { lost == nil ? code ?? 128 + (signal ?? 0) : -1 }
}

func waitForExit(_ pid: pid_t) -> ChildExit {
  var status: Int32 = 0
  while waitpid(pid, &status, 0) < 0 {
    if errno != EINTR { return ChildExit(lost: errno) }
  }
  return ChildExit(waitStatus: status)
}

/// posix_spawn with stdin from /dev/null, the default SIGPIPE (the test process ignores it,
/// as NIO does) and an empty signal mask.
func spawn(_ path: String, _ arguments: [String], environment: [String: String]?, stdout: ChildOutput, stderr: ChildOutput) throws -> pid_t {
  var actions = posix_spawn_file_actions_t()
  posix_spawn_file_actions_init(&actions)
  defer { posix_spawn_file_actions_destroy(&actions) }
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
  for (target, output) in [(Int32(1), stdout), (Int32(2), stderr)] {
    switch output {
    case .null: posix_spawn_file_actions_addopen(&actions, target, "/dev/null", O_WRONLY, 0)
    case .file(let file): posix_spawn_file_actions_addopen(&actions, target, file, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    // dup2 clears close-on-exec on the target; the original closes at exec.
    case .fd(let fd): posix_spawn_file_actions_adddup2(&actions, fd, target)
    }
  }
  // Last (the actions run in order): nothing else of the test process reaches the child. A
  // socket a test opened without close-on-exec, inherited by a long-lived child, would never
  // see its peer's close.
  jank_spawn_actions_closefrom(&actions, 3)

  var attributes = posix_spawnattr_t()
  posix_spawnattr_init(&attributes)
  defer { posix_spawnattr_destroy(&attributes) }
  var defaults = sigset_t()
  sigemptyset(&defaults)
  sigaddset(&defaults, SIGPIPE)
  var mask = sigset_t()
  sigemptyset(&mask)
  posix_spawnattr_setsigdefault(&attributes, &defaults)
  posix_spawnattr_setsigmask(&attributes, &mask)
  posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

  let argv = ([path] + arguments).map { strdup($0) } + [nil]
  let env = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
  defer { (argv + env).forEach { free($0) } }
  var pid: pid_t = 0
  let spawned = posix_spawn(&pid, path, &actions, &attributes, argv, env)
  guard spawned == 0 else { throw ProgramRunError(path: path, step: "posix_spawn", code: spawned) }
  return pid
}

/// A long-running child of the test (a supervisor, jank-api, a plugin run by hand), reaped
/// by a thread of its own from the start, so that its exit is known without blocking anyone.
final class ChildProcess: @unchecked Sendable {
  let pid: pid_t
  /// Shared with the reaping thread, which must not keep this object (and its deinit) alive.
  private let exit = ExitBox()
  private let killOnRelease: Bool

  /// `killOnRelease: false` leaves the child running when this object goes (a test that
  /// orphans it on purpose); it is still reaped.
  init(_ path: String, _ arguments: [String], environment: [String: String]? = nil, stdout: ChildOutput = .null, stderr: ChildOutput = .null, killOnRelease: Bool = true) throws {
    let pid = try spawn(path, arguments, environment: environment, stdout: stdout, stderr: stderr)
    self.pid = pid
    self.killOnRelease = killOnRelease
    let exit = self.exit
    Thread { exit.set(waitForExit(pid)) }.start()
  }

  var processIdentifier: pid_t { pid }
  var isRunning: Bool { exit.value == nil }
  /// How it ended; nil while it runs.
  var ended: ChildExit? { exit.value }
  /// The exit code, or 128 + the signal (0 while it runs).
  var terminationStatus: Int32 { ended?.shellStatus ?? 0 }

  /// SIGTERM, unless it already ended (its pid may belong to someone else by then).
  func terminate() { if isRunning { kill(pid, SIGTERM) } }

  /// Returns once it exited (polls: the reaping thread owns waitpid).
  func waitUntilExit() async {
    while isRunning { try? await Task.sleep(for: .milliseconds(10)) }
  }

  /// A test that throws before it stops its child must not leave it running.
  deinit { if killOnRelease, isRunning { kill(pid, SIGKILL) } }
}

/// Reads two pipes to their ends at once.
private func readBoth(_ first: Int32, _ second: Int32) -> ([UInt8], [UInt8]) {
  var outputs: [[UInt8]] = [[], []]
  var fds = [pollfd(fd: first, events: Int16(POLLIN), revents: 0), pollfd(fd: second, events: Int16(POLLIN), revents: 0)]
  var buffer = [UInt8](repeating: 0, count: 65536)
  while fds.contains(where: { $0.fd >= 0 }) {
    if poll(&fds, nfds_t(fds.count), -1) < 0 {
      if errno == EINTR { continue }
      break
    }
    for index in fds.indices where fds[index].fd >= 0 && fds[index].revents != 0 {
      let n = buffer.withUnsafeMutableBytes { read(fds[index].fd, $0.baseAddress, $0.count) }
      if n > 0 {
        outputs[index] += buffer[0..<n]
      } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
        fds[index].fd = -1  // poll skips negative descriptors
      }
    }
  }
  return (outputs[0], outputs[1])
}

private final class ExitBox: @unchecked Sendable {
  private let lock = NSLock()
  private var exit: ChildExit?
  var value: ChildExit? { lock.withLock { exit } }
  func set(_ value: ChildExit) { lock.withLock { exit = value } }
}
