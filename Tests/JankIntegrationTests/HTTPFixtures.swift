import Foundation
import JankJSON
import Testing

/// The real `jank-api` binary on a free port (it binds port 0 and logs the port it got).
final class APIProcess: @unchecked Sendable {
  let process: ChildProcess
  let port: Int
  private let stderrLines: LockedLines

  init(socket: String, arguments: [String] = [], environment: [String: String] = [:]) async throws {
    let pipe = try OutputPipe(path: Binaries.api)
    process = try ChildProcess(
      Binaries.api, ["--listen", "127.0.0.1:0", "--socket", socket] + arguments,
      environment: ProcessInfo.processInfo.environment.merging(environment) { $1 }, stdout: .null, stderr: .fd(pipe.write))
    pipe.closeWriteEnd()
    let lines = LockedLines()
    stderrLines = lines
    // Read stderr on a thread of its own: it blocks. The thread owns the pipe until EOF.
    Thread {
      var pending: [UInt8] = []
      var chunk = [UInt8](repeating: 0, count: 16384)
      while true {
        let n = chunk.withUnsafeMutableBytes { read(pipe.read, $0.baseAddress, $0.count) }
        if n < 0, errno == EINTR { continue }
        if n <= 0 { break }
        pending += chunk[0..<n]
        while let newline = pending.firstIndex(of: 10) {
          lines.append(String(decoding: pending[..<newline], as: UTF8.self))
          pending.removeSubrange(...newline)
        }
      }
      pipe.closeReadEnd()
    }.start()
    var found: Int?
    _ = await eventually(timeout: .seconds(15)) {
      found = lines.all.lazy.compactMap { line -> Int? in
        guard let range = line.range(of: "listening on http://127.0.0.1:") else { return nil }
        return Int(line[range.upperBound...].prefix { $0.isNumber })
      }.first
      return found != nil
    }
    guard let found else {
      process.terminate()
      throw APITestError("jank-api did not report its port; stderr: \(lines.all.joined(separator: " | "))")
    }
    port = found
  }

  var stderr: [String] { stderrLines.all }

  /// SIGTERM, without waiting (for `defer`); the child's own thread reaps it.
  func terminate() {
    process.terminate()
  }
}

final class LockedLines: @unchecked Sendable {
  private let lock = NSLock()
  private var lines: [String] = []
  func append(_ line: String) { lock.withLock { lines.append(line) } }
  var all: [String] { lock.withLock { lines } }
}

struct APITestError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// One HTTP/1.1 exchange over a real TCP connection (`Connection: close`, read to EOF), on a
/// thread of its own. Raw on purpose: tests send what real clients send, oversized or
/// malformed bodies included, and see exactly the status, headers and body that came back.
struct HTTPResponse: Sendable {
  var status: Int
  var headers: [String: String]
  var body: Data

  var json: JSONValue? { try? JSONDecoder().decode(JSONValue.self, from: body) }
  var text: String { String(decoding: body, as: UTF8.self) }
  func header(_ name: String) -> String? { headers[name.lowercased()] }
}

func http(
  _ method: String, _ port: Int, _ path: String, body: Data? = nil, headers: [String: String] = [:]
) async throws -> HTTPResponse {
  try await withCheckedThrowingContinuation { continuation in
    Thread {
      continuation.resume(with: Result { try blockingHTTP(method, port, path, body: body, headers: headers) })
    }.start()
  }
}

func http(_ method: String, _ port: Int, _ path: String, json: JSONValue, headers: [String: String] = [:]) async throws -> HTTPResponse {
  try await http(method, port, path, body: Data(json.description.utf8), headers: headers.merging(["Content-Type": "application/json"]) { $1 })
}

private func blockingHTTP(_ method: String, _ port: Int, _ path: String, body: Data?, headers: [String: String]) throws -> HTTPResponse {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
  guard fd >= 0 else { throw APITestError("socket: \(errno)") }
  defer { close(fd) }
  var timeout = timeval(tv_sec: 30, tv_usec: 0)
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_port = in_port_t(UInt16(port).bigEndian)
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  let connected = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
  }
  guard connected == 0 else { throw APITestError("connect to 127.0.0.1:\(port): errno \(errno)") }
  // A test may send its own Host (or none, with an empty value).
  var head = "\(method) \(path) HTTP/1.1\r\n" + (headers["Host"] == nil ? "Host: 127.0.0.1:\(port)\r\n" : "") + "Connection: close\r\n"
  for (name, value) in headers where !(name == "Host" && value.isEmpty) { head += "\(name): \(value)\r\n" }
  if let body { head += "Content-Length: \(body.count)\r\n" }
  head += "\r\n"
  var request = Data(head.utf8)
  if let body { request.append(body) }
  try request.withUnsafeBytes { bytes in
    var sent = 0
    while sent < bytes.count {
      let n = send(fd, bytes.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
      if n < 0, errno == EINTR { continue }
      // The server may answer (413) and close before reading everything: stop sending then.
      if n <= 0 { if errno == EPIPE || errno == ECONNRESET { break } else { throw APITestError("send: errno \(errno)") } }
      sent += n
    }
  }
  var response = Data()
  var buffer = [UInt8](repeating: 0, count: 65536)
  let begin = ContinuousClock.now
  var end = "the server closed the connection"
  while true {
    let n = recv(fd, &buffer, buffer.count, 0)
    // A signal (SIGCHLD from any test's child) interrupts recv: that is not the end of the answer.
    if n < 0, errno == EINTR { continue }
    if n < 0 { end = "recv failed: \(String(cString: strerror(errno))) (errno \(errno))" }
    if n <= 0 { break }
    response.append(contentsOf: buffer[0..<n])
  }
  guard let split = response.range(of: Data("\r\n\r\n".utf8)) else {
    throw APITestError(
      "\(method) \(path): no HTTP response head in \(response.count) bytes after \(ContinuousClock.now - begin): \(end): \(String(decoding: response.prefix(200), as: UTF8.self))")
  }
  let lines = String(decoding: response[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
  let status = Int(lines[0].split(separator: " ")[1]) ?? 0
  var fields: [String: String] = [:]
  for line in lines.dropFirst() {
    guard let colon = line.firstIndex(of: ":") else { continue }
    fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
  }
  return HTTPResponse(status: status, headers: fields, body: Data(response[split.upperBound...]))
}

/// jank-api with a configuration it must refuse, run to its exit. Under `timeout` so that a
/// configuration it wrongly accepts fails the test instead of serving forever; the test's own
/// JANK_* variables are left out so that only `environment` counts.
func runRefusedAPI(_ arguments: [String], environment: [String: String] = [:]) async throws -> ProgramResult {
  var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("JANK_") }
  env.merge(environment) { $1 }
  return try await runProgram("/usr/bin/timeout", ["-s", "KILL", "10", Binaries.api] + arguments, environment: env)
}

/// A JSON body of exactly `size` bytes for an id-taking route: the id plus padding.
func paddedBody(id: String, size: Int) -> Data {
  let head = #"{"id":"\#(id)","pad":""#
  return Data((head + String(repeating: "x", count: size - head.utf8.count - 2) + #""}"#).utf8)
}
