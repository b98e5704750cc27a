import Foundation

/// The OpenAPI 3 document of the API (Sources/JankHTTP/openapi.json, served as is).
enum OpenAPIDocument {
  static let json: [UInt8] = {
    guard let url = Bundle.module.url(forResource: "openapi", withExtension: "json"), let data = try? Data(contentsOf: url) else {
      return Array(#"{"error":"openapi.json is missing from jank-api's resources; reinstall jank-api with its jank_JankHTTP.resources folder"}"#.utf8)
    }
    return Array(data)
  }()
}
