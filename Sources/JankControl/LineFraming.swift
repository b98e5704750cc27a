public import NIOCore

/// One control message per line. A line longer than `maximumLength` is reported once as
/// `.tooLong` and skipped up to its newline, so one bad request does not cost the connection.
public enum LineFrame: Sendable {
  case line(ByteBuffer)
  case tooLong
}

public struct LineFrameDecoder: ByteToMessageDecoder {
  public typealias InboundOut = LineFrame

  private let maximumLength: Int
  private var discarding = false
  private var scanned = 0  // bytes of the buffer already searched for a newline

  public init(maximumLength: Int) {
    self.maximumLength = maximumLength
  }

  public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
    let view = buffer.readableBytesView
    if let newline = view.dropFirst(scanned).firstIndex(of: UInt8(ascii: "\n")) {
      let length = newline - view.startIndex
      scanned = 0
      if discarding {
        discarding = false
        buffer.moveReaderIndex(forwardBy: length + 1)
        return .continue
      }
      var line = buffer.readSlice(length: length)!
      buffer.moveReaderIndex(forwardBy: 1)
      if line.readableBytes > 0, line.getInteger(at: line.writerIndex - 1, as: UInt8.self) == UInt8(ascii: "\r") {
        line.moveWriterIndex(to: line.writerIndex - 1)
      }
      context.fireChannelRead(wrapInboundOut(.line(line)))
      return .continue
    }
    if discarding {
      buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
      scanned = 0
      return .needMoreData
    }
    if buffer.readableBytes > maximumLength {
      discarding = true
      buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
      scanned = 0
      context.fireChannelRead(wrapInboundOut(.tooLong))
      return .needMoreData
    }
    scanned = buffer.readableBytes
    return .needMoreData
  }

  public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
    while try decode(context: context, buffer: &buffer) == .continue {}
    // A final line without its newline is still a message.
    if buffer.readableBytes > 0, !discarding {
      let line = buffer.readSlice(length: buffer.readableBytes)!
      context.fireChannelRead(wrapInboundOut(.line(line)))
    }
    return .needMoreData
  }
}
