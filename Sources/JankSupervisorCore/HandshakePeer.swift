import CJankShim
import Foundation
import Glibc

/// Checks that the address a plugin printed in its handshake is served by that plugin.
///
/// A handshake line is plugin output, so it can name anything: a hostile plugin that printed a
/// sibling's socket was registered `ready`, its calls were served by the sibling, and its stop
/// deleted the sibling's socket. Now a Unix socket must sit directly in the folder assigned to
/// this very start, and whoever listens at the address (the kernel's `SO_PEERCRED` for a Unix
/// socket, the owner of the listening socket in /proc for TCP) must be the plugin's process or
/// one of its process group. Anything else fails the start with `handshake-failed`.
enum HandshakePeer {
  struct Refusal: Error, CustomStringConvertible {
    var description: String
    /// Nothing listened at the address before the start deadline.
    var timedOut = false
  }

  /// Returns a connected Unix socket to the plugin (the caller owns it), or nil for TCP.
  static func verify(
    _ handshake: HandshakeLine, socketDirectory: String, plugin: pid_t, identity: PluginIdentity?, deadline: ContinuousClock.Instant
  ) async throws(Refusal) -> CInt? {
    if handshake.network == "unix" {
      let address = handshake.address
      // Compared as real paths: Go's filepath.Join cleans "a/./b" and "a//b" in what it prints.
      let folder = (address as NSString).deletingLastPathComponent
      let name = (address as NSString).lastPathComponent
      guard !name.isEmpty, name != ".", name != "..", let real = PluginDiscovery.realPath(folder), real == PluginDiscovery.realPath(socketDirectory) else {
        throw Refusal(description: "the handshake names the socket \(address), which is not in the folder assigned to this start (\(socketDirectory)); a plugin listens in PLUGIN_UNIX_SOCKET_DIR")
      }
      let fd = try await connectWhenListening(address, deadline: deadline)
      guard let (peer, owner) = peerCredentials(fd) else {
        close(fd)
        throw Refusal(description: "the kernel does not say who listens at \(address) (SO_PEERCRED failed)")
      }
      guard belongs(peer, to: plugin), identity.map({ $0.uid == owner }) ?? true else {
        close(fd)
        throw Refusal(description: "the socket \(address) named in the handshake is served by process \(peer) (\(command(of: peer))), not by the plugin (process \(plugin)) or a process of its group")
      }
      return fd
    }
    let port = handshake.address.split(separator: ":").last.flatMap { Int($0) } ?? -1
    while true {
      if let held = listening(port: port, heldByGroupOf: plugin, uid: identity?.uid) {
        guard held else {
          throw Refusal(description: "the TCP port \(port) named in the handshake is served by a process outside the plugin's group, not by the plugin (process \(plugin))")
        }
        return nil
      }
      guard ContinuousClock.now < deadline, (try? await Task.sleep(for: .milliseconds(5))) != nil else {
        throw Refusal(description: "nothing listens on the TCP port \(port) named in the handshake within start_timeout_ms", timedOut: true)
      }
    }
  }

  /// A plugin prints its handshake once it listens; a refused connect is retried until the
  /// deadline all the same (a listener between bind and listen refuses). Non-blocking: a
  /// plugin that listens and never accepts fills its backlog, and a blocking connect would
  /// then hold this thread for good.
  private static func connectWhenListening(_ path: String, deadline: ContinuousClock.Instant) async throws(Refusal) -> CInt {
    while true {
      let fd = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue) | CInt(SOCK_NONBLOCK.rawValue), 0)
      guard fd >= 0 else { throw Refusal(description: "could not make a socket: \(String(cString: strerror(errno)))") }
      let code = UnixSocketAddress.connect(fd, path: path)
      if code == 0 { return fd }
      close(fd)
      let retry = code == ECONNREFUSED || code == ENOENT || code == EAGAIN
      guard retry else {
        throw Refusal(description: "could not connect to the socket \(path) named in the handshake: \(String(cString: strerror(code)))")
      }
      guard ContinuousClock.now < deadline, (try? await Task.sleep(for: .milliseconds(5))) != nil else {
        throw Refusal(
          description: "nothing listens at the socket \(path) named in the handshake (\(String(cString: strerror(code)))) within start_timeout_ms",
          timedOut: true)
      }
    }
  }

  /// The process (and its uid) that made the listening socket this one is connected to.
  static func peerCredentials(_ fd: CInt) -> (pid: pid_t, uid: uid_t)? {
    var peer = jank_peer()
    guard jank_peer_credentials(fd, &peer) == 0, peer.pid > 0 else { return nil }
    return (peer.pid, peer.uid)
  }

  /// The plugin itself or a process of its group (the plugin leads a group of its own).
  private static func belongs(_ pid: pid_t, to plugin: pid_t) -> Bool {
    pid == plugin || getpgid(pid) == plugin
  }

  private static func command(of pid: pid_t) -> String {
    ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "?").trimmingCharacters(in: .whitespacesAndNewlines)
  }

  /// Whether the plugin or a process of its group holds the socket listening on TCP `port`
  /// (IPv4 or IPv6); nil when nothing listens there. Read from /proc: TCP has no SO_PEERCRED.
  /// A plugin with a uid of its own is told by the socket's owner, which /proc/net/tcp shows
  /// (its descriptors may not be readable by a supervisor that is not root).
  static func listening(port: Int, heldByGroupOf plugin: pid_t, uid: uid_t?) -> Bool? {
    guard (1...65_535).contains(port) else { return nil }
    var inodes = Set<String>()
    var owners = Set<String>()
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
      guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
      for line in text.split(separator: "\n").dropFirst() {
        let fields = line.split(separator: " ")
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        guard fields.count > 9, fields[3] == "0A", let colon = fields[1].lastIndex(of: ":"),
          Int(fields[1][fields[1].index(after: colon)...], radix: 16) == port
        else { continue }
        inodes.insert("socket:[\(fields[9])]")
        owners.insert(String(fields[7]))
      }
    }
    guard !inodes.isEmpty else { return nil }
    if let uid { return owners == ["\(uid)"] }
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
      guard let pid = pid_t(entry), belongs(pid, to: plugin) else { continue }
      let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
      if descriptors.contains(where: { inodes.contains((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) ?? "") }) {
        return true
      }
    }
    return false
  }
}
