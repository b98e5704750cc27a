import Foundation
import JankJSON
import JankProtocol
import SwiftProtobuf
import Testing

/// A small deterministic generator, so a failing seed can be replayed.
struct SplitMix64: RandomNumberGenerator {
  var state: UInt64
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

enum RandomJSON {
  static let alphabet = Array("abcXYZ019 _-\"\\/\n\t\u{0}é漢🙂")

  static func string(_ rng: inout SplitMix64) -> String {
    String((0..<Int.random(in: 0...12, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! })
  }

  static func number(_ rng: inout SplitMix64) -> Double {
    switch Int.random(in: 0...4, using: &rng) {
    case 0: Double(Int.random(in: -1_000_000...1_000_000, using: &rng))
    case 1: Double.random(in: -1e300...1e300, using: &rng)
    case 2: Double.random(in: -1...1, using: &rng)
    case 3: [0.0, -0.0, Double.leastNonzeroMagnitude, Double.greatestFiniteMagnitude, 9_007_199_254_740_991].randomElement(using: &rng)!
    default: Double(Int64.random(in: -(1 << 53)...(1 << 53), using: &rng))
    }
  }

  static func value(_ rng: inout SplitMix64, depth: Int) -> JSONValue {
    let leafOnly = depth >= 4
    switch Int.random(in: 0...(leafOnly ? 3 : 5), using: &rng) {
    case 0: return .null
    case 1: return .bool(Bool.random(using: &rng))
    case 2: return .number(number(&rng))
    case 3: return .string(string(&rng))
    case 4: return .array((0..<Int.random(in: 0...4, using: &rng)).map { _ in value(&rng, depth: depth + 1) })
    default: return .object(object(&rng, depth: depth + 1))
    }
  }

  static func object(_ rng: inout SplitMix64, depth: Int) -> [String: JSONValue] {
    var out: [String: JSONValue] = [:]
    for _ in 0..<Int.random(in: 0...5, using: &rng) { out[string(&rng)] = value(&rng, depth: depth) }
    return out
  }
}

@Suite struct JSONRoundTripTests {
  @Test func anyJSONValueRoundTripsThroughArgsAndDataOnTheWire() throws {
    for seed in UInt64(1)...500 {
      var rng = SplitMix64(state: seed)
      let args = RandomJSON.object(&rng, depth: 0)
      var request = Plugin_ExecuteRequest()
      request.method = "echo"
      request.args = AnyMap.pack(args)
      let bytes: [UInt8] = try request.serializedBytes()
      let decoded = try Plugin_ExecuteRequest(serializedBytes: bytes)
      #expect(try AnyMap.unpack(decoded.args) == args, "seed \(seed)")

      var response = Plugin_ExecuteResponse()
      response.data = AnyMap.pack(args)
      let back = try Plugin_ExecuteResponse(serializedBytes: try response.serializedBytes() as [UInt8])
      #expect(try AnyMap.unpack(back.data) == args, "seed \(seed)")
    }
  }

  @Test func everyAnyCarriesTheGoogleProtobufValueTypeURL() {
    let packed = AnyMap.pack(["a": 1, "b": ["x": [true, nil]]])
    #expect(packed.values.allSatisfy { $0.typeURL == "type.googleapis.com/google.protobuf.Value" })
  }

  @Test func anyOfAnotherTypeIsRejectedWithTheFieldName() {
    var any = Google_Protobuf_Any()
    any.typeURL = "type.googleapis.com/google.protobuf.Duration"
    #expect(throws: PluginWireError.self) { try AnyMap.unpack(["when": any]) }
    do {
      _ = try AnyMap.unpack(["when": any])
    } catch {
      #expect("\(error)".contains("'when'"))
    }
  }

  @Test func jsonTextRoundTripsThroughCodable() throws {
    for seed in UInt64(1)...200 {
      var rng = SplitMix64(state: seed)
      let value = JSONValue.object(RandomJSON.object(&rng, depth: 0))
      let text = try JSONEncoder().encode(value)
      #expect(try JSONDecoder().decode(JSONValue.self, from: text) == value, "seed \(seed)")
      // The compact description is valid JSON for the same value.
      #expect(try JSONDecoder().decode(JSONValue.self, from: Data(value.description.utf8)) == value, "seed \(seed)")
    }
  }
}
