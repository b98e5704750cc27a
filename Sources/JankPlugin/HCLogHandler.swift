#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
public import Logging
import Synchronization

/// Writes swift-log records as hclog JSON lines on stderr, the format go-plugin hosts
/// (and jank-supervisor) parse: `@level`, `@message`, `@module`, `@timestamp` with
/// exactly six fractional digits, then the metadata as string fields.
public struct HCLogHandler: LogHandler {
  public var metadata: Logger.Metadata = [:]
  public var logLevel: Logger.Level = .info
  private let label: String

  public init(label: String) {
    self.label = label
  }

  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  public func log(event: LogEvent) {
    var line = "{\"@level\":\"\(Self.hclogLevel(event.level))\",\"@message\":"
    JSONValue.string(event.message.description).appendJSON(to: &line)
    line += ",\"@module\":"
    JSONValue.string(label).appendJSON(to: &line)
    line += ",\"@timestamp\":\"\(Self.timestamp())\""
    var merged = metadata
    if let extra = event.metadata { merged.merge(extra) { _, new in new } }
    for key in merged.keys.sorted() where !key.hasPrefix("@") {
      line += ","
      JSONValue.string(key).appendJSON(to: &line)
      line += ":"
      JSONValue.string(merged[key]!.description).appendJSON(to: &line)
    }
    line += "}\n"
    StandardError.write(line)
  }

  static func hclogLevel(_ level: Logger.Level) -> String {
    switch level {
    case .trace: "trace"
    case .debug: "debug"
    case .info, .notice: "info"
    case .warning: "warn"
    case .error, .critical: "error"
    }
  }

  /// `2026-11-25T10:04:05.123456Z`: hclog's JSON time layout, always six digits.
  static func timestamp() -> String {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    var seconds = now.tv_sec
    var parts = tm()
    gmtime_r(&seconds, &parts)
    func pad(_ value: Int, _ width: Int) -> String {
      let digits = String(value)
      return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
    return "\(pad(Int(parts.tm_year) + 1900, 4))-\(pad(Int(parts.tm_mon) + 1, 2))-\(pad(Int(parts.tm_mday), 2))"
      + "T\(pad(Int(parts.tm_hour), 2)):\(pad(Int(parts.tm_min), 2)):\(pad(Int(parts.tm_sec), 2))"
      + ".\(pad(Int(now.tv_nsec) / 1000, 6))Z"
  }
}

/// Whole lines to fd 2 under a lock, so concurrent log lines never interleave.
enum StandardError {
  private static let lock = Mutex(())

  static func write(_ text: String) {
    lock.withLock { _ in
      var text = text
      text.withUTF8 { buffer in
        var offset = 0
        while offset < buffer.count {
          let n = Glibc.write(2, buffer.baseAddress! + offset, buffer.count - offset)
          if n < 0 {
            if errno == EINTR { continue }
            return
          }
          offset += n
        }
      }
    }
  }
}
