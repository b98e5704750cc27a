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
    case "spawn-stubborn-child":
      // A child in the plugin's process group that ignores SIGTERM: only the group SIGKILL
      // at the end of the stop sequence removes it.
      var pid: pid_t = 0
      let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sh"), strdup("-c"), strdup("trap '' TERM; exec sleep 600"), nil]
      defer { argv.forEach { free($0) } }
      let rc = posix_spawn(&pid, "/bin/sh", nil, nil, argv, environ)
      guard rc == 0 else { throw PluginError("posix_spawn failed: \(rc)") }
      return ["pid": .number(Double(pid))]
    case "ignore-term":
      // From now on only SIGKILL ends this plugin.
      signal(SIGTERM, SIG_IGN)
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
