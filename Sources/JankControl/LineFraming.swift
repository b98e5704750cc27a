public import NIOCore

/// One control message per line. A line longer than `maximumLength` is reported once as
/// `.tooLong` and skipped up to its newline, so one bad request does not cost the connection.
/// Its first bytes come with it: a JSON-RPC message names its `id` early (our encoders sort
/// keys, and `id` sorts before `method`, `params` and `result`), so the one call that was
/// too large can be answered or failed alone.
public enum LineFrame: Sendable {
  case line(ByteBuffer)
  case tooLong(head: ByteBuffer)

  /// How many bytes of an over-long line are kept.
  public static let headLength = 256
}

/// The `"id"` of a JSON-RPC message from its first bytes: a number or a plain string that
/// follows `"id":` before any nested object starts. nil when it cannot be told.
public func jsonRPCID(inHead head: ByteBuffer) -> JSONRPCID? {
  let bytes = Array(head.readableBytesView)
  let key = Array(#""id""#.utf8)
  var depth = 0
  var index = 0
  var inString = false
  while index < bytes.count {
    let byte = bytes[index]
    if inString {
      if byte == UInt8(ascii: "\\") { index += 2; continue }
      if byte == UInt8(ascii: "\"") { inString = false }
      index += 1
      continue
    }
    switch byte {
    case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
    case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
    case UInt8(ascii: "\""):
      if depth == 1, bytes[index...].starts(with: key) {
        var cursor = index + key.count
        func skipSpaces() { while cursor < bytes.count, bytes[cursor] == 0x20 { cursor += 1 } }
        skipSpaces()
        guard cursor < bytes.count, bytes[cursor] == UInt8(ascii: ":") else {
          index += key.count  // the string "id" as a value, not the key
          continue
        }
        cursor += 1
        skipSpaces()
        guard cursor < bytes.count else { return nil }
        if bytes[cursor] == UInt8(ascii: "\"") {
          guard let end = bytes[(cursor + 1)...].firstIndex(of: UInt8(ascii: "\"")),
            !bytes[(cursor + 1)..<end].contains(UInt8(ascii: "\\"))
          else { return nil }
          return .string(String(decoding: bytes[(cursor + 1)..<end], as: UTF8.self))
        }
        let digits = bytes[cursor...].prefix { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "-") }
        guard cursor + digits.count < bytes.count, let number = Int(String(decoding: digits, as: UTF8.self)) else { return nil }
        return .number(number)
      }
      inString = true
    default: break
    }
    index += 1
  }
  return nil
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
      let head = buffer.getSlice(at: buffer.readerIndex, length: min(LineFrame.headLength, buffer.readableBytes))!
      buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
      scanned = 0
      context.fireChannelRead(wrapInboundOut(.tooLong(head: head)))
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
