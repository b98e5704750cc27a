public import NIOCore

/// What the decoder hands on: a whole frame, or the header of one that was over the
/// maximum and has been skipped (so the receiver can answer `too_large` and keep going).
public enum InboundFrame: Sendable, Equatable {
  case frame(Frame)
  case tooLarge(type: FrameType, id: UInt64, payloadLength: Int)
}

/// The stream is not jank-frame: the only errors after which a connection is closed.
public struct FrameDecodingError: Error, Sendable, Equatable, CustomStringConvertible {
  public var description: String
}

/// Splits the byte stream into frames. A frame over `maxPayloadLength` is read past without
/// being buffered, then reported as `.tooLarge`.
public struct FrameDecoder: ByteToMessageDecoder {
  public typealias InboundOut = InboundFrame

  private let maxPayloadLength: Int
  private var skipping: (type: FrameType, id: UInt64, payloadLength: Int, remaining: Int)?

  public init(maxPayloadLength: Int = Frame.defaultMaxPayloadLength) {
    self.maxPayloadLength = maxPayloadLength
  }

  public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
    guard let frame = try next(from: &buffer) else { return .needMoreData }
    context.fireChannelRead(Self.wrapInboundOut(frame))
    return .continue
  }

  public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
    while let frame = try next(from: &buffer) {
      context.fireChannelRead(Self.wrapInboundOut(frame))
    }
    // A partial frame at the end of the stream is dropped with the connection.
    buffer.moveReaderIndex(to: buffer.writerIndex)
    return .needMoreData
  }

  /// The next frame in `buffer`, or nil when more bytes are needed. Public so that tests and
  /// tools can decode without a channel.
  public mutating func next(from buffer: inout ByteBuffer) throws -> InboundFrame? {
    if var skip = skipping {
      let count = min(skip.remaining, buffer.readableBytes)
      buffer.moveReaderIndex(forwardBy: count)
      skip.remaining -= count
      guard skip.remaining == 0 else {
        skipping = skip
        return nil
      }
      skipping = nil
      return .tooLarge(type: skip.type, id: skip.id, payloadLength: skip.payloadLength)
    }
    guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
    guard length >= Frame.headerLength else {
      throw FrameDecodingError(description: "frame length \(length) is shorter than the \(Frame.headerLength)-byte header; the stream is not jank-frame")
    }
    let payloadLength = Int(length) - Frame.headerLength
    if payloadLength > maxPayloadLength {
      guard buffer.readableBytes >= 4 + Frame.headerLength else { return nil }
      buffer.moveReaderIndex(forwardBy: 4)
      let type = FrameType(rawValue: buffer.readInteger()!)
      let id: UInt64 = buffer.readInteger()!
      skipping = (type, id, payloadLength, payloadLength)
      return try next(from: &buffer)
    }
    guard buffer.readableBytes >= 4 + Int(length) else { return nil }
    buffer.moveReaderIndex(forwardBy: 4)
    let type = FrameType(rawValue: buffer.readInteger()!)
    let id: UInt64 = buffer.readInteger()!
    let payload = buffer.readSlice(length: payloadLength)!
    return .frame(Frame(type: type, id: id, payload: payload))
  }
}

/// Writes frames: header then payload.
public struct FrameEncoder: MessageToByteEncoder {
  public typealias OutboundIn = Frame

  public init() {}

  public func encode(data frame: Frame, out: inout ByteBuffer) {
    frame.write(to: &out)
  }
}

extension Frame {
  /// Appends the frame's wire form to `buffer`.
  public func write(to buffer: inout ByteBuffer) {
    buffer.reserveCapacity(minimumWritableBytes: 4 + Frame.headerLength + payload.readableBytes)
    buffer.writeInteger(UInt32(Frame.headerLength + payload.readableBytes))
    buffer.writeInteger(type.rawValue)
    buffer.writeInteger(id)
    var payload = payload
    buffer.writeBuffer(&payload)
  }

  /// The payload's size, which each side checks against its maximum.
  public var payloadLength: Int { payload.readableBytes }
}
