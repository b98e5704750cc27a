import Glibc

/// `sockaddr_un` for a path, filled in one place: its `sun_path` holds 107 bytes and a NUL.
enum UnixSocketAddress {
  static let maximumPathLength = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

  /// connect(2) to the socket at `path`: 0, or the errno (ENAMETOOLONG for a path too long).
  static func connect(_ fd: CInt, path: String) -> Int32 {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count <= maximumPathLength else { return ENAMETOOLONG }
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes + [0]) }
    let rc = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    return rc == 0 ? 0 : errno
  }
}
