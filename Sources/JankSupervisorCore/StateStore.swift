import Foundation
import Glibc
import Logging

/// What survives a supervisor restart: which plugins are registered and whether the
/// operator wants them running (design §5).
public struct PersistedRegistration: Codable, Sendable, Equatable {
  public var id: String
  public var directory: String
  public var running: Bool
}

/// `<state-dir>/state.json`, written atomically (temp file, fsync, rename, fsync of the
/// folder), so a crash mid-write leaves the old file or the new one, never half of one.
public struct StateStore: Sendable {
  public let path: String
  private let logger: Logger

  public init(stateDirectory: String, logger: Logger) {
    self.path = stateDirectory + "/state.json"
    self.logger = logger
  }

  private struct File: Codable {
    var version = 1
    var plugins: [PersistedRegistration]
  }

  /// The saved registrations. A missing file is an empty state; an unreadable one is moved
  /// aside (and reported), never a reason not to start.
  public func load() -> [PersistedRegistration] {
    guard let data = FileManager.default.contents(atPath: path) else { return [] }
    do {
      return try JSONDecoder().decode(File.self, from: data).plugins
    } catch {
      let aside = path + ".corrupt-\(Int(Date().timeIntervalSince1970))"
      rename(path, aside)
      logger.error(
        "state file is unreadable; moved it aside and started with no registrations",
        metadata: ["path": "\(path)", "moved_to": "\(aside)", "error": "\(error)"])
      return []
    }
  }

  public func save(_ registrations: [PersistedRegistration]) throws {
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
