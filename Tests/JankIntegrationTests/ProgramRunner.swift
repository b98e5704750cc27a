import Foundation
import CJankShim
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
  var out: [Int32] = [-1, -1]
  var err: [Int32] = [-1, -1]
  guard jank_pipe_cloexec(&out) == 0 else { throw ProgramRunError(path: path, step: "pipe2", code: errno) }
  guard jank_pipe_cloexec(&err) == 0 else {
    let code = errno
    close(out[0]); close(out[1])
    throw ProgramRunError(path: path, step: "pipe2", code: code)
  }

  var actions = posix_spawn_file_actions_t()
  posix_spawn_file_actions_init(&actions)
  defer { posix_spawn_file_actions_destroy(&actions) }
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
  // dup2 clears close-on-exec on 1 and 2; the originals close at exec.
  posix_spawn_file_actions_adddup2(&actions, out[1], 1)
  posix_spawn_file_actions_adddup2(&actions, err[1], 2)

  // The test process ignores SIGPIPE (NIO does); the program gets the default back.
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
  close(out[1]); close(err[1])
  guard spawned == 0 else {
    close(out[0]); close(err[0])
    throw ProgramRunError(path: path, step: "posix_spawn", code: spawned)
  }

  let (stdout, stderr) = readBoth(out[0], err[0])
  close(out[0]); close(err[0])
  var status: Int32 = 0
  while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
  let signal = status & 0x7f
  let code = signal == 0 ? (status >> 8) & 0xff : 128 + signal
  return ProgramResult(status: code, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
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
