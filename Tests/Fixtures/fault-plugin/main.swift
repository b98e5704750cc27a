import Glibc
import JankPlugin
import Logging

/// A plugin that misbehaves on request, for tests of deadlines, concurrency, crashes and logs.
struct FaultPlugin: Plugin {
  func execute(method: String, args: [String: JSONValue]) async throws -> [String: JSONValue] {
    switch method {
    case "sleep":
      let ms = Int(args["ms"]?.numberValue ?? 1000)
      try await Task.sleep(for: .milliseconds(ms))
      return ["slept_ms": .number(Double(ms))]
    case "crash":
      // Crash mid-call: the caller must get an error that names the crash.
      kill(getpid(), SIGKILL)
      return [:]
    case "exit":
      exit(Int32(args["code"]?.numberValue ?? 1))
    case "log":
      let logger = Logger(label: "fault")
      for i in 0..<Int(args["lines"]?.numberValue ?? 1) {
        logger.warning("line \(i)", metadata: ["n": "\(i)"])
      }
      return [:]
    case "pid":
      return ["pid": .number(Double(getpid()))]
    case "echo":
      return args
    default:
      throw PluginError("unknown method: \(method)")
    }
  }
}

await serve(FaultPlugin())
