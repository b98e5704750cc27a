public import NIOCore

/// One jank-frame frame (docs/jank-frame.md): a type, the id of the call it belongs to, and
/// a payload that is a `plugin.proto` message (or an error) in protobuf encoding.
///
/// On the wire, big-endian: `length: UInt32` (bytes after this field), `type: UInt8`,
/// `id: UInt64`, payload.
public struct Frame: Sendable, Equatable {
  public var type: FrameType
  /// Chosen by the caller, unique among its calls in flight on one connection; an answer
  /// carries the id of its request.
  public var id: UInt64
  public var payload: ByteBuffer

  public init(type: FrameType, id: UInt64, payload: ByteBuffer = ByteBuffer()) {
    self.type = type
    self.id = id
    self.payload = payload
  }

  /// The protocol name a host offers in `JANK_PLUGIN_PROTOCOLS` and a plugin answers in its
  /// handshake. An incompatible revision gets a new name, so negotiation is the versioning.
  public static let protocolName = "jank-frame"
  /// `type` + `id`: the part of the header counted in `length`.
  public static let headerLength = 9
  /// The largest payload either side accepts unless configured otherwise (gRPC's default too).
  public static let defaultMaxPayloadLength = 4 << 20
}

/// A frame's type. A struct rather than an enum so that a type this side does not know is
/// still representable (and answered with an `invalid` error instead of a dropped connection).
public struct FrameType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  public var rawValue: UInt8
  public init(rawValue: UInt8) { self.rawValue = rawValue }

  /// Request: `timeout_ms: UInt32` (0: none) then `plugin.ExecuteRequest`.
  public static let execute = FrameType(rawValue: 1)
  /// Answer: `plugin.ExecuteResponse`.
  public static let executeResult = FrameType(rawValue: 2)
  /// Request: `plugin.HealthCheckRequest`.
  public static let healthCheck = FrameType(rawValue: 3)
  /// Answer: `plugin.HealthCheckResponse`.
  public static let healthCheckResult = FrameType(rawValue: 4)
  /// Request: empty. The plugin answers, then exits once its calls in flight are done.
  public static let shutdown = FrameType(rawValue: 5)
  /// Answer: empty.
  public static let shutdownResult = FrameType(rawValue: 6)
  /// Host to plugin, empty: cancel the call with this id. No answer of its own.
  public static let cancel = FrameType(rawValue: 7)
  /// Answer to any request: `code: UInt8` then a UTF-8 message (see `FrameErrorCode`).
  public static let error = FrameType(rawValue: 8)

  public var isRequest: Bool { self == .execute || self == .healthCheck || self == .shutdown }

  public var description: String {
    switch self {
    case .execute: "execute"
    case .executeResult: "execute-result"
    case .healthCheck: "health-check"
    case .healthCheckResult: "health-check-result"
    case .shutdown: "shutdown"
    case .shutdownResult: "shutdown-result"
    case .cancel: "cancel"
    case .error: "error"
    default: "unknown(\(rawValue))"
    }
  }
}

/// What an `error` frame says went wrong.
public struct FrameErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  public var rawValue: UInt8
  public init(rawValue: UInt8) { self.rawValue = rawValue }

  /// The plugin's handler threw; the message is its error text.
  public static let pluginError = FrameErrorCode(rawValue: 1)
  /// The request frame was larger than the receiver's maximum; the connection stays open.
  public static let tooLarge = FrameErrorCode(rawValue: 2)
  /// Undecodable payload, unknown frame type, or an id already in flight.
  public static let invalid = FrameErrorCode(rawValue: 3)
  /// The call was cancelled (a cancel frame, or its own timeout passed in the plugin).
  public static let cancelled = FrameErrorCode(rawValue: 4)
  /// The plugin is shutting down and did not start the call: safe to send elsewhere.
  public static let unavailable = FrameErrorCode(rawValue: 5)

  public var description: String {
    switch self {
    case .pluginError: "plugin_error"
    case .tooLarge: "too_large"
    case .invalid: "invalid"
    case .cancelled: "cancelled"
    case .unavailable: "unavailable"
    default: "unknown(\(rawValue))"
    }
  }
}

/// The payload of an `error` frame.
public struct FrameErrorPayload: Sendable, Equatable {
  public var code: FrameErrorCode
  public var message: String

  public init(code: FrameErrorCode, message: String) {
    self.code = code
    self.message = message
  }

  public func frame(id: UInt64, allocator: ByteBufferAllocator = ByteBufferAllocator()) -> Frame {
    var buffer = allocator.buffer(capacity: 1 + message.utf8.count)
    buffer.writeInteger(code.rawValue)
    buffer.writeString(message)
    return Frame(type: .error, id: id, payload: buffer)
  }

  /// Nil when the payload is empty (no code byte).
  public init?(payload: ByteBuffer) {
    var payload = payload
    guard let code = payload.readInteger(as: UInt8.self) else { return nil }
    self.code = FrameErrorCode(rawValue: code)
    self.message = payload.readString(length: payload.readableBytes) ?? ""
  }
}
