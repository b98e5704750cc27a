import JankPlugin

/// The example plugin: greets, echoes, and describes itself.
struct HelloWorld: Plugin {
  static let id = "dev.jank.plugins.hello-world"
  static let name = "Hello World Plugin"
  static let version = "1.0.0"

  func execute(method: String, args: [String: JSONValue]) async throws -> [String: JSONValue] {
    switch method {
    case "greet":
      guard let name = args["name"]?.stringValue, !name.isEmpty else {
        throw PluginError("name is required")
      }
      return ["message": .string("Hello, \(name)!")]
    case "echo":
      return args
    case "info":
      return [
        "id": .string(Self.id), "name": .string(Self.name),
        "version": .string(Self.version), "status": "running",
      ]
    default:
      throw PluginError("unknown method: \(method)")
    }
  }
}

await serve(HelloWorld())
