public import JankJSON
public import SwiftProtobuf

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The type URL every `Any` in `args` and `data` carries (go-plugin Jank compatible).
public let valueTypeURL = "type.googleapis.com/google.protobuf.Value"

public enum PluginWireError: Error, CustomStringConvertible, Sendable {
  case unexpectedAnyType(key: String, typeURL: String)
  case undecodableAny(key: String, reason: String)

  public var description: String {
    switch self {
    case .unexpectedAnyType(let key, let typeURL):
      return "field '\(key)' carries \(typeURL), expected \(valueTypeURL)"
    case .undecodableAny(let key, let reason):
      return "field '\(key)' is not a valid google.protobuf.Value: \(reason)"
    }
  }
}

extension Google_Protobuf_Value {
  public init(json: JSONValue) {
    self.init()
    switch json {
    case .null: kind = .nullValue(.nullValue)
    case .bool(let b): kind = .boolValue(b)
    case .number(let n): kind = .numberValue(n)
    case .string(let s): kind = .stringValue(s)
    case .array(let a):
      var list = Google_Protobuf_ListValue()
      list.values = a.map(Google_Protobuf_Value.init(json:))
      kind = .listValue(list)
    case .object(let o):
      var st = Google_Protobuf_Struct()
      st.fields = o.mapValues(Google_Protobuf_Value.init(json:))
      kind = .structValue(st)
    }
  }
}

extension JSONValue {
  public init(protobuf value: Google_Protobuf_Value) {
    switch value.kind {
    case .none, .nullValue: self = .null
    case .boolValue(let b): self = .bool(b)
    case .numberValue(let n): self = .number(n)
    case .stringValue(let s): self = .string(s)
    case .listValue(let l): self = .array(l.values.map(JSONValue.init(protobuf:)))
    case .structValue(let s): self = .object(s.fields.mapValues(JSONValue.init(protobuf:)))
    }
  }
}

/// Packing and unpacking of the `map<string, google.protobuf.Any>` fields.
public enum AnyMap {
  public static func pack(_ object: [String: JSONValue]) -> [String: Google_Protobuf_Any] {
    var out = [String: Google_Protobuf_Any](minimumCapacity: object.count)
    for (key, value) in object {
      var any = Google_Protobuf_Any()
      any.typeURL = valueTypeURL
      // Serializing a Value cannot fail: it has no required fields.
      any.value = (try? Google_Protobuf_Value(json: value).serializedBytes() as Data) ?? Data()
      out[key] = any
    }
    return out
  }

  public static func unpack(_ map: [String: Google_Protobuf_Any]) throws -> [String: JSONValue] {
    var out = [String: JSONValue](minimumCapacity: map.count)
    for (key, any) in map {
      guard any.typeURL == valueTypeURL || any.typeURL.hasSuffix("/google.protobuf.Value") else {
        throw PluginWireError.unexpectedAnyType(key: key, typeURL: any.typeURL)
      }
      do {
        out[key] = JSONValue(protobuf: try Google_Protobuf_Value(serializedBytes: any.value))
      } catch {
        throw PluginWireError.undecodableAny(key: key, reason: "\(error)")
      }
    }
    return out
  }
}

/// go-plugin's handshake constants for Jank.
public enum Handshake {
  public static let cookieKey = "JANK_PLUGIN"
  public static let cookieValue = "jank-plugin"
  public static let coreProtocolVersion = 1
  public static let appProtocolVersion = 1
  /// The service name go-plugin checks with grpc.health.v1.
  public static let healthService = "plugin"
}
