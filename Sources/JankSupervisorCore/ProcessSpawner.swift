import CJankShim
import Foundation
import Glibc

/// What to run and how: everything the exec shim applies between fork and exec.
public struct SpawnRequest: Sendable {
  public var executable: String
  public var arguments: [String] = []
  public var environment: [String: String] = [:]
  public var workingDirectory: String?
  /// setpgid(0, 0): the plugin and its children can be signalled as one group.
  public var newProcessGroup = true
  /// The child gets SIGKILL when the supervisor dies.
  public var parentDeathSignal: Int32 = SIGKILL
  /// PR_SET_NO_NEW_PRIVS: a setuid program (sudo, su) or a file capability run by the child
  /// gains nothing. Plugins and builds are untrusted code.
  public var noNewPrivileges = true
  /// A Landlock domain of its own (with `noNewPrivileges`, where the kernel has Landlock ABI
  /// 6): the child cannot signal or ptrace the supervisor or another plugin, whatever its uid.
  public var confineSignals = true
  /// The uid and gid the child runs as (none: the supervisor's own).
  public var identity: (uid: uid_t, gid: gid_t)?
  /// The executable, already open (close-on-exec; the caller closes it): the child runs
  /// this very file with execveat, whatever `executable` names by then, and needs no
  /// search permission on the folders above it. `executable` is still argv[0].
  public var executableFD: Int32?
  public var rlimits: [(resource: Int32, soft: UInt64, hard: UInt64)] = []
  /// Open `cgroup.procs` files the child writes itself into before exec (the caller closes).
  public var cgroupProcsFDs: [Int32] = []

  public init(executable: String) {
    self.executable = executable
  }
}

public struct SpawnError: Error, CustomStringConvertible, Sendable {
  public var executable: String
  public var step: String
  public var errno: Int32

  public var description: String {
    "could not start \(executable): \(step) failed: \(String(cString: strerror(errno)))"
  }
}

/// A child with pipes for its stdout and stderr (both read ends owned by the caller).
public struct SpawnedProcess: Sendable {
  public var pid: pid_t
  public var stdout: Int32
  public var stderr: Int32
}

/// Spawns children through the C exec shim (fork, then only async-signal-safe calls).
public enum ProcessSpawner {
  /// Forks on one long-lived thread: PR_SET_PDEATHSIG fires when the *thread* that forked
  /// exits, and the concurrency pool retires idle threads, which would kill the child.
  public static func spawn(_ request: SpawnRequest) async throws -> SpawnedProcess {
    try await SpawnThread.shared.run { Result { try spawnNow(request) } }.get()
  }

  private static func spawnNow(_ request: SpawnRequest) throws -> SpawnedProcess {
    var outPipe: [Int32] = [-1, -1]
    var errPipe: [Int32] = [-1, -1]
    guard jank_pipe_cloexec(&outPipe) == 0 else { throw SpawnError(executable: request.executable, step: "pipe2", errno: errno) }
    guard jank_pipe_cloexec(&errPipe) == 0 else {
      let error = errno
      close(outPipe[0]); close(outPipe[1])
      throw SpawnError(executable: request.executable, step: "pipe2", errno: error)
    }
    let devNull = open("/dev/null", O_RDONLY | O_CLOEXEC)
    defer {
      close(outPipe[1]); close(errPipe[1])
      if devNull >= 0 { close(devNull) }
    }

    // Everything the child needs is prepared before fork: no allocation after it.
    let argv = CStringArray([request.executable] + request.arguments)
    let envp = CStringArray(request.environment.sorted(by: { $0.key < $1.key }).map { "\($0.key)=\($0.value)" })
    var rlimits = request.rlimits
    let openFiles = Int32(RLIMIT_NOFILE.rawValue)
    if !rlimits.contains(where: { $0.resource == openFiles }), let inherited = OpenFilesLimit.forChildren {
      rlimits.append((openFiles, inherited.soft, inherited.hard))
    }
    let limits = rlimits.map { jank_rlimit(resource: $0.resource, soft: $0.soft, hard: $0.hard) }

    var failedStep: UnsafePointer<CChar>?
    let pid: pid_t = request.executable.withCString { path in
      (request.workingDirectory ?? ".").withCString { cwd in
        limits.withUnsafeBufferPointer { limitBuffer in
          request.cgroupProcsFDs.withUnsafeBufferPointer { cgroupBuffer in
          var spawn = jank_spawn_request()
          spawn.path = path
          spawn.argv = UnsafePointer(argv.pointer)
          spawn.envp = UnsafePointer(envp.pointer)
          spawn.cwd = request.workingDirectory == nil ? nil : cwd
          spawn.stdin_fd = devNull
          spawn.stdout_fd = outPipe[1]
          spawn.stderr_fd = errPipe[1]
          spawn.new_process_group = request.newProcessGroup ? 1 : 0
          spawn.parent_death_signal = request.parentDeathSignal
          spawn.no_new_privileges = request.noNewPrivileges ? 1 : 0
          spawn.confine_signals = request.noNewPrivileges && request.confineSignals && SignalConfinement.available ? 1 : 0
          spawn.exec_fd = request.executableFD ?? -1
          if let identity = request.identity {
            spawn.change_identity = 1
            spawn.uid = identity.uid
            spawn.gid = identity.gid
          }
          spawn.rlimits = limitBuffer.baseAddress
          spawn.rlimit_count = Int32(limitBuffer.count)
          spawn.cgroup_procs_fds = cgroupBuffer.baseAddress
          spawn.cgroup_procs_count = Int32(cgroupBuffer.count)
          return jank_spawn(&spawn, &failedStep)
          }
        }
      }
    }
    guard pid > 0 else {
      close(outPipe[0]); close(errPipe[0])
      let step = failedStep.map { String(cString: $0) } ?? "spawn"
      throw SpawnError(executable: request.executable, step: step, errno: -pid)
    }
    ProcessReaper.shared.watch(pid: pid)
    return SpawnedProcess(pid: pid, stdout: outPipe[0], stderr: errPipe[0])
  }
}

/// A NULL-terminated `char *const *` that lives as long as this value.
final class CStringArray {
  let pointer: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>

  init(_ strings: [String]) {
    pointer = .allocate(capacity: strings.count + 1)
    for (i, s) in strings.enumerated() { pointer[i] = strdup(s) }
    pointer[strings.count] = nil
  }

  deinit {
    var i = 0
    while let s = pointer[i] {
      free(s)
      i += 1
    }
    pointer.deallocate()
  }
}

/// The thread every fork happens on. It never exits.
final class SpawnThread: @unchecked Sendable {
  static let shared = SpawnThread()

  private let condition = NSCondition()
  private var jobs: [() -> Void] = []  // guarded by `condition`

  private init() {
    let thread = Thread { [self] in loop() }
    thread.name = "jank-spawn"
    thread.start()
  }

  func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
      condition.lock()
      jobs.append { continuation.resume(returning: body()) }
      condition.signal()
      condition.unlock()
    }
  }

  private func loop() {
    while true {
      condition.lock()
      while jobs.isEmpty { condition.wait() }
      let job = jobs.removeFirst()
      condition.unlock()
      job()
    }
  }
}

/// Landlock's scopes (Linux 6.12, ABI 6) keep a process from signalling or tracing any process
/// outside its own domain; each plugin gets a domain of its own at exec.
public enum SignalConfinement {
  /// The kernel's Landlock ABI (negative: -errno, Landlock missing or disabled).
  public static let abi = Int(jank_landlock_abi())
  public static var available: Bool { abi >= 6 }

  /// Why plugins are not confined, or nil when they are.
  public static var unavailableReason: String? {
    if available { return nil }
    if abi < 0 { return "this kernel has no Landlock (\(String(cString: strerror(Int32(-abi)))); boot with lsm=landlock,… to enable it)" }
    return "this kernel's Landlock is ABI \(abi); signal scoping needs ABI 6 (Linux 6.12)"
  }
}
