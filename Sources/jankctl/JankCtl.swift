import ArgumentParser
import Foundation
import JankControl
import JankJSON
import Synchronization

/// The operator's CLI: a thin client of the supervisor's control socket.
/// Exit codes: 0 success, 1 plugin or request error, 2 bad usage, 3 supervisor unreachable.
@main
struct JankCtl: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "jankctl",
    abstract: "Operate a running jank-supervisor.",
    subcommands: [
      List.self, Get.self, Register.self, Unregister.self, Start.self, Stop.self, Restart.self, Build.self, Exec.self, Logs.self, Status.self, Metrics.self,
    ])

  /// ArgumentParser exits 64 on bad usage; jankctl's contract (design §10) is 2.
  static func main() async {
    do {
      var command = try parseAsRoot()
      if var command = command as? any AsyncParsableCommand {
        try await command.run()
      } else {
        try command.run()
      }
    } catch {
      if exitCode(for: error) == .validationFailure {
        FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
        Foundation.exit(2)
      }
      exit(withError: error)
    }
  }
}

struct GlobalOptions: ParsableArguments {
  @Option(name: .long, help: "Control socket (env JANK_SOCKET; default ./.jank/supervisor.sock).")
  var socket: String?

  @Flag(name: .long, help: "Print the control method's result (or error) as one JSON document.")
  var json = false

  @Option(name: .long, help: "Give up (exit 1) when the supervisor has not answered within this many seconds.")
  var timeout: Double?

  var callTimeout: Duration? { timeout.map { .milliseconds(Int64($0 * 1000)) } }

  func validate() throws {
    if let timeout, !(timeout > 0 && timeout < 1e9) { throw ValidationError("--timeout must be a positive number of seconds") }
  }

  var socketPath: String {
    let env = ProcessInfo.processInfo.environment
    if let socket { return socket }
    if let path = env["JANK_SOCKET"] { return path }
    if let state = env["JANK_STATE_DIR"] { return state + "/supervisor.sock" }
    return FileManager.default.currentDirectoryPath + "/.jank/supervisor.sock"
  }
}

/// Connects, calls, prints, and turns failures into the documented exit codes.
func perform<Params, Result: Encodable>(
  _ options: GlobalOptions, _ method: ControlMethod<Params, Result>, _ params: Params,
  beforeOutput: () async -> Void = {}, human: (Result) -> String
) async throws {
  do {
    let client = try await ControlClient.connect(path: options.socketPath)
    defer { Task { await client.close() } }
    let result: Result
    do {
      result = try await client.call(method, params, timeout: options.callTimeout)
    } catch {
      await beforeOutput()
      throw error
    }
    await beforeOutput()
    if options.json {
      print(try Output.json(result))
    } else {
      print(TerminalText.escaped(human(result)))
    }
  } catch let error as ControlError {
    if options.json {
      let object: [String: JSONValue] = ["error": ["kind": .string(error.kind.rawValue), "code": .number(Double(error.code)), "message": .string(error.message), "data": .object(error.details.filter { $0.key != "unreachable" })]]
      print(JSONValue.object(object).description)
    } else {
      FileHandle.standardError.write(Data("jankctl: \(TerminalText.escaped(error.message))\n".utf8))
    }
    throw ExitCode(error.details["unreachable"] == .bool(true) ? 3 : 1)
  }
}

/// Prints the lines a build adds to its log, polling `plugin.logs` with `source: "build"`.
struct BuildLogFollower: Sendable {
  let client: ControlClient
  let id: String
  /// The previous build's log, which stays until the new build starts writing.
  let previous: [String]

  /// Connects and reads the previous build's log; call it before the build is requested,
  /// or a build that starts first is mistaken for the previous one.
  static func start(socket: String, id: String) async -> BuildLogFollower? {
    guard let client = try? await ControlClient.connect(path: socket) else { return nil }
    let previous = (try? await client.call(ControlMethods.logs, LogsParams(id: id, tail: 1000, source: "build")).lines) ?? []
    return BuildLogFollower(client: client, id: id, previous: previous)
  }

  func follow(until done: StopFlag) async {
    defer { Task { await client.close() } }
    func lines() async -> [String]? {
      try? await client.call(ControlMethods.logs, LogsParams(id: id, tail: 1000, source: "build")).lines
    }
    var printed = 0
    var started = false
    var last = false
    while !last {
      // One more read after the build finished, so its last lines are shown too.
      last = done.isSet
      if !last { try? await Task.sleep(for: .milliseconds(250)) }
      guard let now = await lines() else { continue }
      if !started {
        guard now != previous || last else { continue }
        started = true
      }
      if now.count < printed { printed = 0 }
      for line in now.dropFirst(printed) { FileHandle.standardError.write(Data(("  | " + TerminalText.escapedLine(line[...]) + "\n").utf8)) }
      printed = now.count
    }
  }
}

final class StopFlag: Sendable {
  private let value = Mutex(false)
  func set() { value.withLock { $0 = true } }
  var isSet: Bool { value.withLock { $0 } }
}

enum Output {
  static func json<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
  }

  static func table(_ header: [String], _ rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
    func line(_ cells: [String]) -> String {
      cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
        .joined(separator: "  ")
    }
    return ([line(header)] + rows.map(line)).joined(separator: "\n")
  }

  static func describe(_ info: PluginInfo) -> String {
    var lines = [
      "id:          \(info.id)", "name:        \(info.name) \(info.version) (\(info.type))",
      "status:      \(info.status.rawValue) (wanted: \(info.desired))", "directory:   \(info.directory)",
    ]
    if let pid = info.pid { lines.append("pid:         \(pid)") }
    if let uptime = info.uptimeSeconds { lines.append("uptime:      \(Int(uptime)) s") }
    lines.append("restarts:    \(info.restarts), in flight: \(info.inFlight)")
    if let exit = info.lastExit {
      lines.append("last exit:   \(exit.reason.rawValue)\(exit.code.map { " code \($0)" } ?? "")\(exit.signal.map { " signal \($0)" } ?? "") at \(exit.at)")
    }
    if let error = info.lastError { lines.append("last error:  \(error)") }
    if let problem = info.folderProblem { lines.append("folder:      \(problem)") }
    if let isolation = info.isolation {
      lines.append("isolation:   \(isolation)\(info.uid.map { " (uid \($0))" } ?? "")\(info.isolationNote.map { ": \($0)" } ?? "")")
    }
    if let limits = info.limitsEnforced { lines.append("limits:      \(limits)\(info.limitsNote.map { ": \($0)" } ?? "")") }
    return lines.joined(separator: "\n")
  }
}

/// A subcommand that sends `{id}` and shows the returned PluginInfo.
protocol PluginInfoCommand: AsyncParsableCommand {
  static var method: ControlMethod<PluginIDParams, PluginInfo> { get }
  var options: GlobalOptions { get }
  var id: String { get }
}

extension PluginInfoCommand {
  func run() async throws {
    try await perform(options, Self.method, PluginIDParams(id: id), human: Output.describe)
  }
}

extension JankCtl {
  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List registered and discovered plugins.")
    @OptionGroup var options: GlobalOptions
    @Option(help: "Only plugins with this status.") var status: String?

    func validate() throws {
      if let status, PluginStatus(rawValue: status) == nil {
        throw ValidationError("unknown status '\(status)'; one of: \(PluginStatus.allCases.map(\.rawValue).joined(separator: ", "))")
      }
    }

    func run() async throws {
      try await perform(options, ControlMethods.list, ListParams(status: status.flatMap(PluginStatus.init(rawValue:)))) { list in
        var rows = list.registered.map { [$0.id, $0.status.rawValue, $0.version, $0.pid.map(String.init) ?? "-", $0.lastError ?? ""] }
        rows += list.unregistered.map { [$0.id ?? "(\(($0.directory as NSString).lastPathComponent))", $0.status.rawValue, $0.version ?? "-", "-", $0.problems.joined(separator: "; ")] }
        return rows.isEmpty ? "no plugins" : Output.table(["ID", "STATUS", "VERSION", "PID", "NOTE"], rows)
      }
    }
  }

  struct Get: PluginInfoCommand {
    static let configuration = CommandConfiguration(abstract: "Show one registered plugin.")
    static let method = ControlMethods.get
    @OptionGroup var options: GlobalOptions
    @Argument(help: "Plugin id.") var id: String
  }

  struct Register: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Register a discovered plugin and start it.")
    @OptionGroup var options: GlobalOptions
    @Argument(help: "Plugin id.") var id: String
    @Flag(help: "Rebuild the binary first.") var rebuild = false
    func run() async throws {
      try await perform(options, ControlMethods.register, RegisterParams(id: id, rebuild: rebuild ? true : nil), human: Output.describe)
    }
  }

  struct Unregister: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop a plugin and forget its registration.")
    @OptionGroup var options: GlobalOptions
    @Argument(help: "Plugin id.") var id: String
    func run() async throws {
      try await perform(options, ControlMethods.unregister, PluginIDParams(id: id)) { "unregistered \($0.id)" }
    }
  }

  struct Start: PluginInfoCommand {
    static let configuration = CommandConfiguration(abstract: "Start a registered plugin.")
    static let method = ControlMethods.start
    @OptionGroup var options: GlobalOptions
    @Argument(help: "Plugin id.") var id: String
  }

  struct Stop: PluginInfoCommand {
    static let configuration = CommandConfiguration(abstract: "Stop a registered plugin.")
    static let method = ControlMethods.stop
    @OptionGroup var options: GlobalOptions
    @Argument(help: "Plugin id.") var id: String
  }

  struct Restart: PluginInfoCommand {
    static let configuration = CommandConfiguration(abstract: "Restart a registered plugin (also leaves error or backoff).")
    static let method = ControlMethods.restart
    @OptionGroup var options: GlobalOptions
    @Argument(help: "Plugin id.") var id: String
  }

  struct Build: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Rebuild a registered plugin's binary, showing the build's output as it runs; a running plugin is swapped onto it.")
    @OptionGroup var options: GlobalOptions
    @Argument(help: "Plugin id.") var id: String

    func run() async throws {
      // The build log, followed while the build runs (on stderr, so --json stays one document).
      let done = StopFlag()
      let follower = options.json ? nil : await BuildLogFollower.start(socket: options.socketPath, id: id)
      let following = follower.map { follower in Task { await follower.follow(until: done) } }
      try await perform(
        options, ControlMethods.build, PluginIDParams(id: id),
        beforeOutput: {
          done.set()
          await following?.value
        },
        human: Output.describe)
    }
  }

  struct Logs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the last lines a plugin wrote to stdout and stderr.")
    @OptionGroup var options: GlobalOptions
    @Argument(help: "Plugin id.") var id: String
    @Option(help: "How many lines (1-1000, default 100).") var tail: Int?
    @Flag(help: "Show the plugin's last build log instead of its output.") var build = false

    func validate() throws {
      if let tail, !(1...1000).contains(tail) { throw ValidationError("--tail must be between 1 and 1000") }
    }

    func run() async throws {
      try await perform(options, ControlMethods.logs, LogsParams(id: id, tail: tail, source: build ? "build" : nil)) { $0.lines.joined(separator: "\n") }
    }
  }

  struct Exec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Call a method of a plugin: jankctl exec ID METHOD --args '{\"name\":\"Ada\"}'.")
    @OptionGroup var options: GlobalOptions
    @Argument(help: "Plugin id.") var id: String
    @Argument(help: "Method name.") var method: String
    @Option(help: "Arguments as a JSON object.") var args: String?
    @Option(help: "Deadline in milliseconds.") var timeoutMs: Int?

    func validate() throws {
      if let timeoutMs, timeoutMs <= 0 { throw ValidationError("--timeout-ms must be a positive number") }
      _ = try parsedArgs()
    }

    func parsedArgs() throws -> [String: JSONValue]? {
      guard let args else { return nil }
      guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(args.utf8)), let object = value.objectValue else {
        throw ValidationError("--args must be a JSON object, like '{\"name\":\"Ada\"}'")
      }
      return object
    }

    func run() async throws {
      let params = ExecuteParams(id: id, method: method, args: try parsedArgs(), timeoutMs: timeoutMs)
      try await perform(options, ControlMethods.execute, params) { result in
        JSONValue.object(result.data).description
      }
    }
  }

  struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the supervisor's status.")
    @OptionGroup var options: GlobalOptions
    func run() async throws {
      try await perform(options, ControlMethods.status, NoParams()) { s in
        let counts = s.statuses.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        return """
          jank-supervisor \(s.version), pid \(s.pid), up \(Int(s.uptimeSeconds)) s
          plugins: \(s.pluginsDirectory)
          socket:  \(s.socket)
          registered: \(s.registered) \(counts)
          """
      }
    }
  }

  struct Metrics: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the supervisor's metrics as Prometheus text (with --json: {\"text\": ...}).")
    @OptionGroup var options: GlobalOptions
    func run() async throws {
      // The exposition ends with a newline and print adds one: drop the first so output ends with one.
      try await perform(options, ControlMethods.metrics, NoParams()) { $0.text.hasSuffix("\n") ? String($0.text.dropLast()) : $0.text }
    }
  }
}
