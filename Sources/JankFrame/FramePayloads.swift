public import JankJSON
public import JankProtocol
public import NIOCore
public import SwiftProtobuf

/// The `plugin.proto` messages inside frames, serialized straight into and out of
/// `ByteBuffer`s (no `Data`, no Foundation).
extension Frame {
  /// An `execute` request for `method` with `args`, encoded by `ExecuteCodec` (the hot path).
  public static func execute(id: UInt64, timeoutMs: UInt32, method: String, args: [String: JSONValue]) -> Frame {
    var payload = ByteBuffer()
    payload.reserveCapacity(64)
    payload.writeInteger(timeoutMs)
    ExecuteCodec.writeRequest(method: method, args: args, to: &payload)
    return Frame(type: .execute, id: id, payload: payload)
  }

  /// An `execute-result` answer carrying `data`, encoded by `ExecuteCodec`.
  public static func executeResult(id: UInt64, data: [String: JSONValue]) -> Frame {
    var payload = ByteBuffer()
    payload.reserveCapacity(64)
    ExecuteCodec.writeResponse(data: data, to: &payload)
    return Frame(type: .executeResult, id: id, payload: payload)
  }

  /// Reads an `execute` request's timeout, method and arguments.
  public func executeCall() throws -> (timeoutMs: UInt32, method: String, args: [String: JSONValue]) {
    var payload = payload
    guard let timeout = payload.readInteger(as: UInt32.self) else {
      throw FrameDecodingError(description: "execute frame \(id) has no timeout field")
    }
    let (method, args) = try ExecuteCodec.readRequest(payload)
    return (timeout, method, args)
  }

  /// Reads an `execute-result` answer's data.
  public func executeData() throws -> [String: JSONValue] {
    try ExecuteCodec.readResponse(payload)
  }

  /// An `execute` request: `timeout_ms: UInt32` then the protobuf request.
  public static func execute(id: UInt64, timeoutMs: UInt32, request: Plugin_ExecuteRequest) throws -> Frame {
    let message: ProtobufBytes = try request.serializedBytes()
    var payload = ByteBuffer()
    payload.reserveCapacity(4 + message.count)
    payload.writeInteger(timeoutMs)
    var bytes = message.buffer
    payload.writeBuffer(&bytes)
    return Frame(type: .execute, id: id, payload: payload)
  }

  /// A frame whose payload is one protobuf message.
  public static func message(_ type: FrameType, id: UInt64, _ message: some SwiftProtobuf.Message) throws -> Frame {
    let bytes: ProtobufBytes = try message.serializedBytes()
    return Frame(type: type, id: id, payload: bytes.buffer)
  }

  /// Decodes the payload as one protobuf message.
  public func message<M: SwiftProtobuf.Message>(as type: M.Type = M.self) throws -> M {
    try M(serializedBytes: ProtobufBytes(payload))
  }
}

/// Lets swift-protobuf read from and write into a `ByteBuffer` without copying through `[UInt8]`.
public struct ProtobufBytes: SwiftProtobufContiguousBytes {
  public var buffer: ByteBuffer

  public init(_ buffer: ByteBuffer) { self.buffer = buffer }

  public init(repeating: UInt8, count: Int) {
    buffer = ByteBuffer(repeating: repeating, count: count)
  }

  public init<S: Sequence>(_ sequence: S) where S.Element == UInt8 {
    buffer = ByteBuffer(bytes: sequence)
  }

  public var count: Int { buffer.readableBytes }

  public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
    try buffer.withUnsafeReadableBytes(body)
  }

  public mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
    try buffer.withUnsafeMutableReadableBytes(body)
  }
}
