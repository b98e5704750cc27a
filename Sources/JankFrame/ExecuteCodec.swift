public import JankJSON
import JankProtocol
public import NIOCore

/// `plugin.ExecuteRequest` and `plugin.ExecuteResponse` in protobuf's binary encoding, written
/// straight from `[String: JSONValue]` into a `ByteBuffer` and read straight back.
///
/// Why not the generated messages: with them every call builds a `Google_Protobuf_Value` tree,
/// serializes each value into its own `Data`, wraps it in an `Any`, then serializes the map,
/// and the reverse on the other side; through swift-protobuf's generic visitors this was a
/// large part of each side's CPU per call (BENCHMARKS.md). The bytes are the same: each
/// map value is a `google.protobuf.Any` (type URL `JankProtocol.valueTypeURL`) packing a
/// `google.protobuf.Value`, so gRPC peers and swift-protobuf read them alike (tested both ways).
public enum ExecuteCodec {
  /// Deeper nesting is refused rather than recursed into (swift-protobuf's limit too).
  public static let maxDepth = 100

  // MARK: Writing

  /// Appends an `ExecuteRequest { method = 1; args = 2 }`.
  public static func writeRequest(method: String, args: [String: JSONValue], to buffer: inout ByteBuffer) {
    if !method.isEmpty { writeString(field: 1, method, to: &buffer) }
    writeAnyMap(field: 2, args, to: &buffer)
  }

  /// Appends an `ExecuteResponse { data = 1 }`.
  public static func writeResponse(data: [String: JSONValue], to buffer: inout ByteBuffer) {
    writeAnyMap(field: 1, data, to: &buffer)
  }

  private static func writeAnyMap(field: UInt64, _ map: [String: JSONValue], to buffer: inout ByteBuffer) {
    for (key, value) in map {
      let valueSize = size(of: value)
      let anySize = stringFieldSize(field: 1, utf8Count: valueTypeURL.utf8.count) + 1 + varintSize(UInt64(valueSize)) + valueSize
      writeEntryHeader(field: field, key: key, valueSize: anySize, to: &buffer)
      writeString(field: 1, valueTypeURL, to: &buffer)
      writeTag(field: 2, wire: 2, to: &buffer)
      writeVarint(UInt64(valueSize), to: &buffer)
      write(value, to: &buffer)
    }
  }

  /// A map entry's tag, length and key, then the tag and length of its value (field 2),
  /// whose `valueSize` bytes the caller writes next. `map<string, Any>` and `Struct.fields` alike.
  private static func writeEntryHeader(field: UInt64, key: String, valueSize: Int, to buffer: inout ByteBuffer) {
    writeTag(field: field, wire: 2, to: &buffer)
    writeVarint(UInt64(entrySize(key: key, valueSize: valueSize)), to: &buffer)
    writeString(field: 1, key, to: &buffer)
    writeTag(field: 2, wire: 2, to: &buffer)
    writeVarint(UInt64(valueSize), to: &buffer)
  }

  private static func entrySize(key: String, valueSize: Int) -> Int {
    stringFieldSize(field: 1, utf8Count: key.utf8.count) + 1 + varintSize(UInt64(valueSize)) + valueSize
  }

  /// A `google.protobuf.Value`'s fields (without its own tag and length). A oneof member is
  /// written even when it holds its default, as protobuf requires.
  private static func write(_ value: JSONValue, to buffer: inout ByteBuffer) {
    switch value {
    case .null:
      writeTag(field: 1, wire: 0, to: &buffer)
      writeVarint(0, to: &buffer)
    case .number(let number):
      writeTag(field: 2, wire: 1, to: &buffer)
      buffer.writeInteger(number.bitPattern, endianness: .little)
    case .string(let string):
      writeString(field: 3, string, to: &buffer)
    case .bool(let bool):
      writeTag(field: 4, wire: 0, to: &buffer)
      writeVarint(bool ? 1 : 0, to: &buffer)
    case .object(let object):
      writeTag(field: 5, wire: 2, to: &buffer)
      writeVarint(UInt64(structSize(object)), to: &buffer)
      for (key, member) in object {
        writeEntryHeader(field: 1, key: key, valueSize: size(of: member), to: &buffer)
        write(member, to: &buffer)
      }
    case .array(let array):
      writeTag(field: 6, wire: 2, to: &buffer)
      writeVarint(UInt64(listSize(array)), to: &buffer)
      for element in array {
        let elementSize = size(of: element)
        writeTag(field: 1, wire: 2, to: &buffer)
        writeVarint(UInt64(elementSize), to: &buffer)
        write(element, to: &buffer)
      }
    }
  }

  /// The encoded size of a `Value`'s fields.
  private static func size(of value: JSONValue) -> Int {
    switch value {
    case .null, .bool: return 2
    case .number: return 9
    case .string(let string): return stringFieldSize(field: 3, utf8Count: string.utf8.count)
    case .object(let object):
      let inner = structSize(object)
      return 1 + varintSize(UInt64(inner)) + inner
    case .array(let array):
      let inner = listSize(array)
      return 1 + varintSize(UInt64(inner)) + inner
    }
  }

  private static func structSize(_ object: [String: JSONValue]) -> Int {
    var total = 0
    for (key, member) in object {
      let entry = entrySize(key: key, valueSize: size(of: member))
      total += 1 + varintSize(UInt64(entry)) + entry
    }
    return total
  }

  private static func listSize(_ array: [JSONValue]) -> Int {
    var total = 0
    for element in array {
      let elementSize = size(of: element)
      total += 1 + varintSize(UInt64(elementSize)) + elementSize
    }
    return total
  }

  /// Tag, length and bytes of a string field numbered under 16 (a one-byte tag).
  private static func stringFieldSize(field: UInt64, utf8Count: Int) -> Int {
    1 + varintSize(UInt64(utf8Count)) + utf8Count
  }

  private static func writeString(field: UInt64, _ string: String, to buffer: inout ByteBuffer) {
    writeTag(field: field, wire: 2, to: &buffer)
    writeVarint(UInt64(string.utf8.count), to: &buffer)
    buffer.writeString(string)
  }

  private static func writeTag(field: UInt64, wire: UInt64, to buffer: inout ByteBuffer) {
    writeVarint(field << 3 | wire, to: &buffer)
  }

  private static func writeVarint(_ value: UInt64, to buffer: inout ByteBuffer) {
    var value = value
    while value >= 0x80 {
      buffer.writeInteger(UInt8(truncatingIfNeeded: value) | 0x80)
      value >>= 7
    }
    buffer.writeInteger(UInt8(value))
  }

  private static func varintSize(_ value: UInt64) -> Int {
    value == 0 ? 1 : (64 - value.leadingZeroBitCount + 6) / 7
  }

  // MARK: Reading

  /// Reads an `ExecuteRequest`.
  public static func readRequest(_ buffer: ByteBuffer) throws(ExecuteCodecError) -> (method: String, args: [String: JSONValue]) {
    try buffer.withUnsafeReadableBytes { bytes throws(ExecuteCodecError) in
      var reader = WireReader(bytes)
      var method = ""
      var args: [String: JSONValue] = [:]
      while let (field, wire) = try reader.tag() {
        switch (field, wire) {
        case (1, 2): method = try reader.string()
        case (2, 2): try readAnyMapEntry(try reader.nested(), into: &args)
        default: try reader.skip(wire: wire)
        }
      }
      return (method, args)
    }
  }

  /// Reads an `ExecuteResponse`.
  public static func readResponse(_ buffer: ByteBuffer) throws(ExecuteCodecError) -> [String: JSONValue] {
    try buffer.withUnsafeReadableBytes { bytes throws(ExecuteCodecError) in
      var reader = WireReader(bytes)
      var data: [String: JSONValue] = [:]
      while let (field, wire) = try reader.tag() {
        if field == 1, wire == 2 {
          try readAnyMapEntry(try reader.nested(), into: &data)
        } else {
          try reader.skip(wire: wire)
        }
      }
      return data
    }
  }

  /// One `map<string, Any>` entry; the `Any` must pack a `google.protobuf.Value`.
  private static func readAnyMapEntry(_ entry: WireReader, into map: inout [String: JSONValue]) throws(ExecuteCodecError) {
    var entry = entry
    var key = ""
    var any: WireReader?
    while let (field, wire) = try entry.tag() {
      switch (field, wire) {
      case (1, 2): key = try entry.string()
      case (2, 2): any = try entry.nested()
      default: try entry.skip(wire: wire)
      }
    }
    // A missing Any is an empty one: no type URL, which is refused like any other.
    var typeURL = ""
    var packed = WireReader(UnsafeRawBufferPointer(start: nil, count: 0))
    if var any {
      while let (field, wire) = try any.tag() {
        switch (field, wire) {
        case (1, 2): typeURL = try any.string()
        case (2, 2): packed = try any.nested()
        default: try any.skip(wire: wire)
        }
      }
    }
    guard typeURL == valueTypeURL || typeURL.hasSuffix("/google.protobuf.Value") else {
      throw .unexpectedAnyType(key: key, typeURL: typeURL)
    }
    do {
      map[key] = try readValue(packed, depth: 0)
    } catch .malformed(let reason) {
      throw .undecodableAny(key: key, reason: reason)
    }
  }

  /// A `google.protobuf.Value`. Of several oneof members the last wins, as in protobuf; none is null.
  private static func readValue(_ value: WireReader, depth: Int) throws(ExecuteCodecError) -> JSONValue {
    guard depth < maxDepth else { throw .malformed("nested deeper than \(maxDepth) levels") }
    var value = value
    var result = JSONValue.null
    while let (field, wire) = try value.tag() {
      switch (field, wire) {
      case (1, 0): _ = try value.varint(); result = .null
      case (2, 1): result = .number(Double(bitPattern: try value.fixed64()))
      case (3, 2): result = .string(try value.string())
      case (4, 0): result = .bool(try value.varint() != 0)
      case (5, 2):
        var members = try value.nested()
        var object: [String: JSONValue] = [:]
        while let (field, wire) = try members.tag() {
          guard field == 1, wire == 2 else {
            try members.skip(wire: wire)
            continue
          }
          var entry = try members.nested()
          var key = ""
          var member = JSONValue.null
          while let (field, wire) = try entry.tag() {
            switch (field, wire) {
            case (1, 2): key = try entry.string()
            case (2, 2): member = try readValue(try entry.nested(), depth: depth + 1)
            default: try entry.skip(wire: wire)
            }
          }
          object[key] = member
        }
        result = .object(object)
      case (6, 2):
        var elements = try value.nested()
        var array: [JSONValue] = []
        while let (field, wire) = try elements.tag() {
          guard field == 1, wire == 2 else {
            try elements.skip(wire: wire)
            continue
          }
          array.append(try readValue(try elements.nested(), depth: depth + 1))
        }
        result = .array(array)
      default: try value.skip(wire: wire)
      }
    }
    return result
  }
}

/// Why bytes are not an `ExecuteRequest` or `ExecuteResponse` of JSON values.
public enum ExecuteCodecError: Error, Sendable, Equatable, CustomStringConvertible {
  case malformed(String)
  case unexpectedAnyType(key: String, typeURL: String)
  case undecodableAny(key: String, reason: String)

  public var description: String {
    switch self {
    case .malformed(let reason): "not a valid protobuf message: \(reason)"
    case .unexpectedAnyType(let key, let typeURL): "field '\(key)' carries \(typeURL.isEmpty ? "no type URL" : typeURL), expected \(valueTypeURL)"
    case .undecodableAny(let key, let reason): "field '\(key)' is not a valid google.protobuf.Value: \(reason)"
    }
  }
}

/// Reads protobuf's wire format from a borrowed byte range, checking every length.
struct WireReader {
  private let bytes: UnsafeRawBufferPointer
  private var index: Int

  init(_ bytes: UnsafeRawBufferPointer) {
    self.bytes = bytes
    index = 0
  }

  /// The next field's number and wire type; nil at the end.
  mutating func tag() throws(ExecuteCodecError) -> (field: UInt64, wire: UInt64)? {
    guard index < bytes.count else { return nil }
    let tag = try varint()
    guard tag >> 3 != 0 else { throw .malformed("field number 0") }
    return (tag >> 3, tag & 7)
  }

  mutating func varint() throws(ExecuteCodecError) -> UInt64 {
    var result: UInt64 = 0
    var shift: UInt64 = 0
    while index < bytes.count, shift < 64 {
      let byte = bytes[index]
      index += 1
      result |= UInt64(byte & 0x7F) << shift
      if byte < 0x80 { return result }
      shift += 7
    }
    throw .malformed(index >= bytes.count ? "truncated varint" : "varint longer than 10 bytes")
  }

  mutating func fixed64() throws(ExecuteCodecError) -> UInt64 {
    guard bytes.count - index >= 8 else { throw .malformed("truncated 64-bit field") }
    var result: UInt64 = 0
    for offset in 0..<8 { result |= UInt64(bytes[index + offset]) << (8 * UInt64(offset)) }
    index += 8
    return result
  }

  /// A length-delimited field's bytes, as a reader of their own.
  mutating func nested() throws(ExecuteCodecError) -> WireReader {
    let length = try varint()
    guard length <= UInt64(bytes.count - index) else { throw .malformed("a length of \(length) runs past the end") }
    let start = index
    index += Int(length)
    return WireReader(UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
  }

  mutating func string() throws(ExecuteCodecError) -> String {
    let field = try nested()
    guard let string = String(validating: field.bytes, as: UTF8.self) else { throw .malformed("a string that is not UTF-8") }
    return string
  }

  mutating func skip(wire: UInt64) throws(ExecuteCodecError) {
    switch wire {
    case 0: _ = try varint()
    case 1:
      guard bytes.count - index >= 8 else { throw .malformed("truncated 64-bit field") }
      index += 8
    case 2: _ = try nested()
    case 5:
      guard bytes.count - index >= 4 else { throw .malformed("truncated 32-bit field") }
      index += 4
    default: throw .malformed("wire type \(wire) (groups are not supported)")
    }
  }
}
