/// go-plugin's handshake line: `CORE|APP|NETWORK|ADDR|PROTOCOL[|SERVER-CERT][|MUX]`.
public struct HandshakeLine: Sendable, Equatable {
  public var network: String
  public var address: String
  public var `protocol`: String

  public init(network: String, address: String, protocol: String) {
    self.network = network
    self.address = address
    self.protocol = `protocol`
  }

  /// Parses the first stdout line of a plugin; the error names what is wrong and quotes the
  /// line. `offered` is what the host put in `JANK_PLUGIN_PROTOCOLS` (gRPC is always accepted).
  public static func parse(_ line: String, offered: [String] = ["grpc"]) throws(HandshakeError) -> HandshakeLine {
    let fields = line.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
    guard (4...7).contains(fields.count) else {
      throw HandshakeError(line: line, problem: "expected CORE|APP|NETWORK|ADDR|PROTOCOL, got \(fields.count) field(s)")
    }
    guard fields[0] == "1" else {
      throw HandshakeError(line: line, problem: "core protocol version is '\(fields[0])', this supervisor speaks go-plugin core version 1")
    }
    guard fields[1] == "1" else {
      throw HandshakeError(line: line, problem: "app protocol version is '\(fields[1])', Jank plugins speak version 1")
    }
    let network = fields[2]
    guard network == "unix" || network == "tcp" else {
      throw HandshakeError(line: line, problem: "network '\(network)' is not unix or tcp")
    }
    let address = fields[3]
    guard !address.isEmpty else { throw HandshakeError(line: line, problem: "the address is empty") }
    let proto = fields.count >= 5 ? fields[4] : "netrpc"
    guard proto == "grpc" || offered.contains(proto) else {
      let why = proto == "netrpc" ? "go-plugin's net/rpc is not supported, Jank plugins serve gRPC" : "this supervisor offered \(offered.joined(separator: ","))"
      throw HandshakeError(line: line, problem: "protocol '\(proto)' was not offered: \(why)")
    }
    if network == "tcp" {
      let host = address.split(separator: ":").dropLast().joined(separator: ":")
      guard ["127.0.0.1", "localhost", "[::1]", "::1"].contains(host) else {
        throw HandshakeError(line: line, problem: "tcp address '\(address)' is not on loopback")
      }
    }
    return HandshakeLine(network: network, address: address, protocol: proto)
  }
}

public struct HandshakeError: Error, Sendable, Equatable, CustomStringConvertible {
  public var line: String
  public var problem: String

  public var description: String {
    "invalid handshake line \"\(line.prefix(200))\": \(problem)"
  }
}
