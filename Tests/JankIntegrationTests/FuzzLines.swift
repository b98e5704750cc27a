import Foundation
import JankJSON

/// The control-channel fuzzer's lines and its check of each answer (ControlFuzzTests).
enum FuzzLine {
  static let methods = [
    "plugin.list", "plugin.get", "plugin.register", "plugin.unregister", "plugin.start", "plugin.stop", "plugin.restart",
    "plugin.build", "plugin.logs", "plugin.execute", "supervisor.status", "supervisor.metrics", "no.such", "",
  ]
  static let keys = ["id", "tail", "source", "method", "args", "timeout_ms", "rebuild", "status", "name", "payload", "x"]

  /// One request line without its newline. Every line carries `"id": id` where the envelope
  /// is an object, so every line gets exactly one answer (no notifications).
  static func make(_ random: inout SplitMix64, id: Int, pluginID: String) -> [UInt8] {
    let head = #"{"jsonrpc":"2.0","id":\#(id),"method":"#
    switch Int.random(in: 0..<100, using: &random) {
    case 0..<10:  // bytes, anything but a newline (or a CR, which a line may end with: "\r" alone is an empty line, unanswered)
      return (0..<Int.random(in: 1...300, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }.map { $0 == 10 || $0 == 13 ? 32 : $0 }
    case 10..<20:  // invalid UTF-8 inside a string
      let bad = (0..<Int.random(in: 1...20, using: &random)).map { _ in UInt8.random(in: 0x80...0xFF, using: &random) }
      return Array((head + #""supervisor.status","params":{"x":""#).utf8) + bad + Array(#""}}"#.utf8)
    case 20..<30:  // deep nesting
      let depth = Int.random(in: 1...5000, using: &random)
      let (open, close) = Bool.random(using: &random) ? ("[", "]") : (#"{"a":"#, "}")
      let method = methods.randomElement(using: &random)!
      return Array((head + "\"\(method)\",\"params\":" + String(repeating: open, count: depth) + "1" + String(repeating: close, count: depth) + "}").utf8)
    case 30..<70:  // a real method, params of any shape and type
      let params = Bool.random(using: &random) ? object(&random, depth: 0, pluginID: pluginID) : value(&random, depth: 0, pluginID: pluginID)
      return Array((head + "\"\(methods.randomElement(using: &random)!)\",\"params\":\(params)}").utf8)
    case 70..<90:
      return Array(brokenEnvelope(&random, id: id).utf8)
    default:  // well-formed calls about a plugin that is not there
      let method = ["plugin.get", "plugin.logs", "plugin.execute", "plugin.stop", "plugin.build"].randomElement(using: &random)!
      return Array((head + "\"\(method)\",\"params\":{\"id\":\"\(pluginID)\",\"method\":\"greet\",\"tail\":5}}").utf8)
    }
  }

  static func brokenEnvelope(_ random: inout SplitMix64, id: Int) -> String {
    switch Int.random(in: 0..<12, using: &random) {
    case 0: return #"{"id":\#(id),"method":"supervisor.status"}"#
    case 1: return #"{"jsonrpc":"1.0","id":\#(id),"method":"supervisor.status"}"#
    case 2: return #"{"jsonrpc":2,"id":\#(id),"method":"supervisor.status"}"#
    case 3: return #"{"jsonrpc":"2.0","id":\#(id)}"#
    case 4: return #"{"jsonrpc":"2.0","id":\#(id),"method":7}"#
    case 5: return #"{"jsonrpc":"2.0","id":\#(id),"method":["plugin.list"]}"#
    case 6: return #"{"jsonrpc":"2.0","id":\#(id),"method":"plugin.list","params":"all"}"#
    case 7: return #"{"jsonrpc":"2.0","id":{"n":\#(id)},"method":"plugin.list"}"#
    case 8: return #"{"jsonrpc":"2.0","id":true,"method":"plugin.list"}"#
    case 9: return #"[{"jsonrpc":"2.0","id":\#(id),"method":"plugin.list"}]"#
    case 10: return ["5", "\"x\"", "null", "[]", "{}", " "].randomElement(using: &random)!  // (an empty line is skipped, unanswered)
    default: return #"{"jsonrpc":"2.0","id":\#(id),"id":\#(id),"method":"plugin.list","method":"plugin.list","extra":[1,2]}"#
    }
  }

  static func value(_ random: inout SplitMix64, depth: Int, pluginID: String) -> String {
    switch Int.random(in: 0..<(depth > 3 ? 6 : 8), using: &random) {
    case 0: return "null"
    case 1: return Bool.random(using: &random) ? "true" : "false"
    case 2: return String(Int64.random(in: .min ... .max, using: &random))
    case 3: return ["1e308", "-0", "0.5", "1e-400", "123456789012345678901234567890", "-1"].randomElement(using: &random)!
    case 4: return string(&random)
    case 5: return "\"\(pluginID)\""
    case 6: return "[" + (0..<Int.random(in: 0...4, using: &random)).map { _ in value(&random, depth: depth + 1, pluginID: pluginID) }.joined(separator: ",") + "]"
    default: return object(&random, depth: depth + 1, pluginID: pluginID)
    }
  }

  static func object(_ random: inout SplitMix64, depth: Int, pluginID: String) -> String {
    let fields = (0..<Int.random(in: 0...5, using: &random)).map { _ in
      "\"\(keys.randomElement(using: &random)!)\":" + value(&random, depth: depth + 1, pluginID: pluginID)
    }
    return "{" + fields.joined(separator: ",") + "}"
  }

  /// A JSON string with control characters, escapes, quotes and non-ASCII in it.
  static func string(_ random: inout SplitMix64) -> String {
    let pieces = ["a", "Z", "\\n", "\\u0000", "\\u001b[31m", "\\\"", "\\\\", "é", "✓", "\\ud83d\\ude00", "\\ud800", "/", " ", "..", "%00"]
    return "\"" + (0..<Int.random(in: 0...40, using: &random)).map { _ in pieces.randomElement(using: &random)! }.joined() + "\""
  }

  /// What is wrong with one answer line, or nil: a JSON-RPC 2.0 response with an id that is
  /// null (unparseable request) or one of the batch's, each answered once, and exactly one
  /// of result and error (an integer code and a message).
  static func problem(inAnswer line: [UInt8], ids: Set<Int>, answered: inout Set<Int>) -> String? {
    guard case .object(let object)? = try? JSONDecoder().decode(JSONValue.self, from: Data(line)) else { return "not a JSON object" }
    guard object["jsonrpc"] == "2.0" else { return "no jsonrpc 2.0" }
    switch object["id"] {
    case .number(let number)?:
      guard let id = Int(exactly: number), ids.contains(id) else { return "an id that was not sent" }
      guard answered.insert(id).inserted else { return "a second answer to one id" }
    case .null?: break
    default: return "an id that is neither null nor a number sent"
    }
    switch (object["result"], object["error"]) {
    case (.some, nil): return nil
    case (nil, .object(let error)?):
      guard case .number? = error["code"], case .string? = error["message"] else { return "an error without an integer code and a message" }
      return nil
    default: return "not exactly one of result and error"
    }
  }
}

extension RawSocket {
  /// Reads until `count` newline-ended lines arrived, the peer closed, or `within` passed.
  func lines(_ count: Int, within timeout: Duration) async -> [[UInt8]] {
    await offPool {
      let deadline = ContinuousClock.now + timeout
      var lines: [[UInt8]] = []
      var pending: [UInt8] = []
      var chunk = [UInt8](repeating: 0, count: 65_536)
      while lines.count < count, ContinuousClock.now < deadline {
        var pfd = pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&pfd, 1, 100)
        if ready < 0, errno == EINTR { continue }
        guard ready > 0 else { continue }
        let n = chunk.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, $0.count, 0) }
        if n < 0, errno == EINTR { continue }
        guard n > 0 else { break }
        pending += chunk[0..<n]
        while let newline = pending.firstIndex(of: 10) {
          lines.append(Array(pending[..<newline]))
          pending.removeSubrange(...newline)
        }
      }
      return lines
    }
  }
}
