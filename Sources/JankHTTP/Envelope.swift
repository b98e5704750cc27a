import Foundation
import HTTPTypes
import Hummingbird
import JankControl
import JankJSON

/// The API's one response shape (design §7):
/// `{"code":0,"msg":"ok","data":…,"request_id":"…"}`, or on failure a non-zero code, a
/// message that says what to do, the details as data (or null), and the HTTP status.
enum Envelope {
  static let encoder: JSONEncoder = {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return encoder
  }()

  static func success(_ data: some Encodable, requestID: String) throws -> Response {
    let encoded = try encoder.encode(data)
    var body = ByteBuffer()
    body.reserveCapacity(encoded.count + 64 + requestID.utf8.count)
    body.writeString(#"{"code":0,"msg":"ok","data":"#)
    body.writeBytes(encoded)
    body.writeString(#","request_id":"#)
    body.writeString(JSONValue.string(requestID).description)
    body.writeString("}")
    return response(.ok, body)
  }

  static func failure(_ error: APIError, requestID: String) -> Response {
    var details = error.details
    details["kind"] = .string(error.kind)
    var body = ByteBuffer()
    body.writeString(#"{"code":\#(error.code),"msg":"#)
    body.writeString(JSONValue.string(error.message).description)
    body.writeString(#","data":"#)
    body.writeString(JSONValue.object(details).description)
    body.writeString(#","request_id":"#)
    body.writeString(JSONValue.string(requestID).description)
    body.writeString("}")
    var response = response(error.status, body)
    for field in error.headers { response.headers.append(field) }
    return response
  }

  private static func response(_ status: HTTPResponse.Status, _ body: ByteBuffer) -> Response {
    Response(status: status, headers: [.contentType: "application/json; charset=utf-8"], body: ResponseBody(byteBuffer: body))
  }
}
