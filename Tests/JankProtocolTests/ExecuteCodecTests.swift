import JankFrame
import JankJSON
import JankProtocol
import NIOCore
import SwiftProtobuf
import Testing

/// jank-frame's direct codec writes and reads the same bytes as swift-protobuf's generated
/// messages (which gRPC peers use), and refuses malformed bytes with an error, never a crash.
@Suite struct ExecuteCodecTests {
  @Test func whatTheCodecWritesSwiftProtobufReadsAsTheSameValues() throws {
    for seed in UInt64(1)...500 {
      var rng = SplitMix64(state: seed)
      let args = RandomJSON.object(&rng, depth: 0)
      let method = RandomJSON.string(&rng)
      var buffer = ByteBuffer()
      ExecuteCodec.writeRequest(method: method, args: args, to: &buffer)
      let request = try Plugin_ExecuteRequest(serializedBytes: Array(buffer.readableBytesView))
      #expect(request.method == method, "seed \(seed)")
      #expect(try AnyMap.unpack(request.args) == args, "seed \(seed)")
      #expect(request.args.values.allSatisfy { $0.typeURL == valueTypeURL })

      buffer.clear()
      ExecuteCodec.writeResponse(data: args, to: &buffer)
      let response = try Plugin_ExecuteResponse(serializedBytes: Array(buffer.readableBytesView))
      #expect(try AnyMap.unpack(response.data) == args, "seed \(seed)")
    }
  }

  @Test func whatSwiftProtobufWritesTheCodecReadsAsTheSameValues() throws {
    for seed in UInt64(1)...500 {
      var rng = SplitMix64(state: seed)
      let args = RandomJSON.object(&rng, depth: 0)
      var request = Plugin_ExecuteRequest()
      request.method = RandomJSON.string(&rng)
      request.args = AnyMap.pack(args)
      let decoded = try ExecuteCodec.readRequest(ByteBuffer(bytes: try request.serializedBytes() as [UInt8]))
      #expect(decoded.method == request.method, "seed \(seed)")
      #expect(decoded.args == args, "seed \(seed)")

      var response = Plugin_ExecuteResponse()
      response.data = AnyMap.pack(args)
      #expect(try ExecuteCodec.readResponse(ByteBuffer(bytes: try response.serializedBytes() as [UInt8])) == args, "seed \(seed)")
    }
  }

  @Test func unknownFieldsAreSkippedAndEmptyMessagesAreEmpty() throws {
    #expect(try ExecuteCodec.readRequest(ByteBuffer()) == ("", [:]))
    #expect(try ExecuteCodec.readResponse(ByteBuffer()) == [:])
    var buffer = ByteBuffer()
    // Field 15 as a varint, field 14 as fixed32, field 13 as fixed64: none is known.
    buffer.writeBytes([15 << 3 | 0, 0x96, 0x01, 14 << 3 | 5, 1, 2, 3, 4, 13 << 3 | 1, 1, 2, 3, 4, 5, 6, 7, 8])
    ExecuteCodec.writeRequest(method: "greet", args: ["name": "Ada"], to: &buffer)
    let decoded = try ExecuteCodec.readRequest(buffer)
    #expect(decoded.method == "greet")
    #expect(decoded.args == ["name": "Ada"])
  }

  @Test func anAnyOfAnotherTypeIsRefusedWithTheFieldName() {
    var request = Plugin_ExecuteRequest()
    var any = Google_Protobuf_Any()
    any.typeURL = "type.googleapis.com/google.protobuf.Duration"
    request.args = ["when": any]
    #expect(throws: ExecuteCodecError.unexpectedAnyType(key: "when", typeURL: any.typeURL)) {
      try ExecuteCodec.readRequest(ByteBuffer(bytes: try request.serializedBytes() as [UInt8]))
    }
  }

  @Test func nestingBeyondTheLimitAndInvalidUTF8AreRefused() throws {
    var deep = JSONValue.null
    for _ in 0...ExecuteCodec.maxDepth { deep = .array([deep]) }
    var buffer = ByteBuffer()
    ExecuteCodec.writeResponse(data: ["deep": deep], to: &buffer)
    #expect(throws: ExecuteCodecError.self) { try ExecuteCodec.readResponse(buffer) }

    // A method (field 1) whose three bytes are not UTF-8.
    #expect(throws: ExecuteCodecError.self) { try ExecuteCodec.readRequest(ByteBuffer(bytes: [0x0A, 3, 0xFF, 0xFE, 0xFD])) }
  }

  /// Truncated, bit-flipped and random bytes: an answer or an error, never a crash.
  @Test func malformedBytesGetAnErrorOrAValueNeverACrash() {
    var rng = SplitMix64(state: 0x6A61_6E6B)
    var refused = 0
    for round in 0..<3_000 {
      var buffer = ByteBuffer()
      ExecuteCodec.writeRequest(method: "echo", args: RandomJSON.object(&rng, depth: 0), to: &buffer)
      var bytes = Array(buffer.readableBytesView)
      switch round % 3 {
      case 0: bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng)))
      case 1: if !bytes.isEmpty { for _ in 0..<3 { bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) } }
      default: bytes = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
      }
      do {
        _ = try ExecuteCodec.readRequest(ByteBuffer(bytes: bytes))
        _ = try ExecuteCodec.readResponse(ByteBuffer(bytes: bytes))
      } catch {
        refused += 1
      }
    }
    #expect(refused > 1_000)
  }
}
