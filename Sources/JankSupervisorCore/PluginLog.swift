import Foundation
import JankJSON
import Logging
import Synchronization

/// The last lines a plugin wrote to stderr (and stdout after its handshake), forwarded to
/// swift-log with `plugin_id` metadata. hclog JSON lines keep their level and message.
public final class PluginLog: Sendable {
  /// The ring's bounds, in lines and in bytes: a plugin writing lines of 64 KiB (the
  /// reader's cap) would otherwise hold 64 MB of the supervisor's memory, and a thousand
  /// such plugins 64 GB. The journal keeps everything.
  public static let capacity = 1_000
  public static let byteBudget = 1 << 20

  private struct Ring {
    var lines: [String] = []
    var bytes = 0
  }

  private let ring = Mutex(Ring())
  private let logger: Logger

  init(pluginID: String, logger: Logger) {
    var logger = logger
    logger[metadataKey: "plugin_id"] = "\(pluginID)"
    self.logger = logger
  }

  public func tail(_ count: Int = capacity) -> [String] {
    ring.withLock { Array($0.lines.suffix(count)) }
  }

  func append(_ line: String, stream: String) {
    ring.withLock { ring in
      ring.lines.append(line)
      ring.bytes += line.utf8.count
      var drop = 0
      var bytes = ring.bytes
      while ring.lines.count - drop > Self.capacity || (bytes > Self.byteBudget && ring.lines.count - drop > 1) {
        bytes -= ring.lines[drop].utf8.count
        drop += 1
      }
      if drop > 0 {
        ring.lines.removeFirst(drop)
        ring.bytes = bytes
      }
    }
    let (level, message, metadata) = Self.interpret(line)
    var meta = metadata
    meta["stream"] = "\(stream)"
    logger.log(level: level, "\(message)", metadata: meta)
  }

  /// The metadata keys the supervisor sets on every plugin line.
  static let reservedKeys: Set<String> = ["plugin_id", "stream"]

  /// hclog JSON (`@level`, `@message`, other keys) or plain text with a `[LEVEL]` prefix.
  public static func interpret(_ line: String) -> (Logger.Level, String, Logger.Metadata) {
    if line.first == "{", let data = line.data(using: .utf8),
      let object = try? JSONDecoder().decode([String: JSONValue].self, from: data),
      let message = object["@message"]?.stringValue
    {
      var metadata: Logger.Metadata = [:]
      for (key, value) in object where !key.hasPrefix("@") {
        // A plugin's field never replaces the supervisor's own keys: `plugin_id` from a
        // plugin would otherwise make its lines pass for another plugin's.
        metadata[reservedKeys.contains(key) ? "hclog." + key : key] = .string(value.stringValue ?? value.description)
      }
      return (level(object["@level"]?.stringValue ?? "info"), message, metadata)
    }
    for (prefix, lvl) in [("[TRACE]", Logger.Level.trace), ("[DEBUG]", .debug), ("[INFO]", .info), ("[WARN]", .warning), ("[ERROR]", .error)]
    where line.hasPrefix(prefix) {
      return (lvl, String(line.dropFirst(prefix.count).drop(while: { $0 == " " })), [:])
    }
    return (.info, line, [:])
  }

  private static func level(_ text: String) -> Logger.Level {
    switch text.lowercased() {
    case "trace": .trace
    case "debug": .debug
    case "warn", "warning": .warning
    case "error": .error
    default: .info
    }
  }
}
