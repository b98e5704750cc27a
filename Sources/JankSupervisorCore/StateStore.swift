import Foundation
import Glibc
import Logging
import Synchronization

/// What survives a supervisor restart: which plugins are registered and whether the
/// operator wants them running (design §5).
public struct PersistedRegistration: Codable, Sendable, Equatable {
  public var id: String
  public var directory: String
  public var running: Bool
  /// The uid the plugin runs as (uid isolation), kept so that it stays the plugin's own.
  public var uid: UInt32? = nil
}

/// `<state-dir>/state.json`, written atomically (temp file, fsync, rename, fsync of the
/// folder), so a crash mid-write leaves the old file or the new one, never half of one.
public final class StateStore: Sendable {
  public let path: String
  private let logger: Logger
  /// Why saving is refused: the state file exists but could be neither read nor moved
  /// aside, and overwriting it would lose registrations an operator can still recover.
  private let blocked = Mutex<String?>(nil)
  /// Saves run here, one at a time and in the order they were asked for (see `save`).
  private let queue = DispatchQueue(label: "jank.state-file")

  public init(stateDirectory: String, logger: Logger) {
    self.path = stateDirectory + "/state.json"
    self.logger = logger
  }

  private struct File: Codable {
    var version = 1
    var plugins: [PersistedRegistration]
  }

  /// The saved registrations. A missing file is an empty state; one that cannot be read
  /// or decoded is moved aside (and reported), never a reason not to start, and never
  /// silently overwritten.
  public func load() -> [PersistedRegistration] {
    let data: Data
    switch Self.readFile(path) {
    case .missing:
      return []
    case .unreadable(let why):
      moveAside(problem: "cannot be read (\(why))")
      return []
    case .contents(let contents):
      data = contents
    }
    do {
      return try JSONDecoder().decode(File.self, from: data).plugins
    } catch {
      moveAside(problem: "is not a valid state file (\(error))")
      return []
    }
  }

  private enum ReadResult {
    case missing
    case unreadable(String)
    case contents(Data)
  }

  /// Unlike `FileManager.contents(atPath:)`, tells a missing file from one it cannot read
  /// (no permission, a directory in its place, an I/O error).
  private static func readFile(_ path: String) -> ReadResult {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return errno == ENOENT ? .missing : .unreadable(String(cString: strerror(errno))) }
    defer { close(fd) }
    var data = Data()
    var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
      let n = read(fd, &buffer, buffer.count)
      if n < 0, errno == EINTR { continue }
      if n < 0 { return .unreadable(String(cString: strerror(errno))) }
      if n == 0 { return .contents(data) }
      data.append(buffer, count: n)
    }
  }

  private func moveAside(problem: String) {
    let aside = Self.unusedAsideName(for: path)
    guard rename(path, aside) == 0 else {
      let message =
        "the state file \(path) \(problem) and could not be moved aside (\(String(cString: strerror(errno)))); "
        + "registrations will not be saved until it is repaired or removed and the supervisor restarted"
      blocked.withLock { $0 = message }
      logger.critical("state file is unreadable and stays in place; not overwriting it", metadata: ["path": "\(path)", "error": "\(message)"])
      return
    }
    logger.error(
      "state file is unreadable; moved it aside and started with no registrations (register the plugins again, or repair the file and restart)",
      metadata: ["path": "\(path)", "moved_to": "\(aside)", "problem": "\(problem)"])
  }

  /// `state.json.corrupt-<UTC time>`, with `-2`, `-3`… when that name is taken (two
  /// corrupt files in one second keep both).
  static func unusedAsideName(for path: String, now: Date = Date()) -> String {
    var formatter = Date.ISO8601FormatStyle(timeZone: .gmt)
    formatter = formatter.dateSeparator(.omitted).timeSeparator(.omitted)
    let base = path + ".corrupt-" + now.formatted(formatter)
    var candidate = base
    var n = 1
    var info = stat()
    while lstat(candidate, &info) == 0, n < 10_000 {
      n += 1
      candidate = base + "-\(n)"
    }
    return candidate
  }

  /// Saves off the caller's thread and returns once the state is on disk. The write has two
  /// fsyncs, which take long on a loaded disk: on the supervisor actor they held a thread
  /// of the cooperative pool (two on a 2-core machine), and with it every other call,
  /// health check and deadline.
  public func save(_ registrations: [PersistedRegistration]) async throws {
    try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
      queue.async { done.resume(with: Result { try self.writeFile(registrations) }) }
    }
  }

  private func writeFile(_ registrations: [PersistedRegistration]) throws {
    if let reason = blocked.withLock({ $0 }) { throw StateFileBlocked(message: reason) }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    let data = try encoder.encode(File(plugins: registrations.sorted { $0.id < $1.id }))
    let directory = (path as NSString).deletingLastPathComponent
    let temporary = path + ".tmp-\(getpid())"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    let synced = fsync(fd)
    close(fd)
    guard written == data.count, synced == 0, rename(temporary, path) == 0 else {
      let code = errno
      unlink(temporary)
      throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO)
    }
    let dirFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if dirFD >= 0 {
      fsync(dirFD)
      close(dirFD)
    }
  }
}

/// Saving was refused to keep an unreadable state file intact.
public struct StateFileBlocked: Error, CustomStringConvertible {
  public var message: String
  public var description: String { message }
}
