import Foundation
import Hummingbird
import JankControl
import JankJSON

/// A request's JSON object body, with field readers whose errors name the field and say
/// what it should be (400, never a 500).
struct RequestBody {
  let fields: [String: JSONValue]

  static func read(_ request: Request, limit: Int) async throws -> RequestBody {
    let buffer = try await request.body.collect(upTo: limit)
    guard buffer.readableBytes > 0 else {
      throw APIError.invalid(#"the request body is empty; send a JSON object such as {"id":"dev.jank.plugins.hello-world"}"#)
    }
    let value: JSONValue
    do {
      value = try JSONDecoder().decode(JSONValue.self, from: Data(buffer: buffer))
    } catch {
      throw APIError.invalid("the request body is not valid JSON (\(Self.reason(error))); send a JSON object")
    }
    guard let object = value.objectValue else {
      throw APIError.invalid("the request body must be a JSON object, not \(value.kindName)")
    }
    return RequestBody(fields: object)
  }

  func id() throws -> String {
    try string("id", hint: "a plugin id such as dev.jank.plugins.hello-world")
  }

  func string(_ name: String, hint: String) throws -> String {
    guard let value = fields[name] else { throw APIError.invalid("field '\(name)' is required: \(hint)") }
    guard let string = value.stringValue, !string.isEmpty else {
      throw APIError.invalid("field '\(name)' must be a non-empty string (\(hint)), not \(value.kindName)")
    }
    return string
  }

  func optionalString(_ name: String) throws -> String? {
    guard let value = fields[name] else { return nil }
    guard let string = value.stringValue else { throw APIError.invalid("field '\(name)' must be a string, not \(value.kindName)") }
    return string
  }

  func optionalBool(_ name: String) throws -> Bool? {
    guard let value = fields[name] else { return nil }
    guard case .bool(let bool) = value else { throw APIError.invalid("field '\(name)' must be true or false, not \(value.kindName)") }
    return bool
  }

  func optionalObject(_ name: String) throws -> [String: JSONValue]? {
    guard let value = fields[name] else { return nil }
    guard let object = value.objectValue else { throw APIError.invalid("field '\(name)' must be a JSON object, not \(value.kindName)") }
    return object
  }

  func optionalInteger(_ name: String, in range: ClosedRange<Int>) throws -> Int? {
    guard let value = fields[name] else { return nil }
    guard let number = value.numberValue, number.rounded() == number, Double(range.lowerBound) <= number, number <= Double(range.upperBound) else {
      throw APIError.invalid("field '\(name)' must be a whole number from \(range.lowerBound) to \(range.upperBound), not \(value.description.prefix(40))")
    }
    return Int(number)
  }

  private static func reason(_ error: any Error) -> String {
    if case DecodingError.dataCorrupted(let context) = error {
      return (context.underlyingError as? NSError)?.userInfo[NSDebugDescriptionErrorKey] as? String ?? context.debugDescription
    }
    return "\(error)"
  }
}
