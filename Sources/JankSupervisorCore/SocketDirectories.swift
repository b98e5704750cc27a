import Glibc

/// Where each plugin process gets its private 0700 socket folder: `<state>/run/N`, short
/// enough for sun_path's 107 bytes with the plugin's own file name (about 40 bytes) in it.
struct SocketDirectories {
  let stateDirectory: String
  private var index = 0
  /// With a long state path, a folder of our own in /tmp made by mkdtemp (0700, a name
  /// nobody can guess or make first). A predictable /tmp name could be made beforehand by
  /// another user, who would then own the folder our plugins' sockets live in.
  private var fallbackRoot: String?

  init(stateDirectory: String) {
    self.stateDirectory = stateDirectory
  }

  mutating func next() -> String {
    index += 1
    let preferred = stateDirectory + "/run/\(index)"
    if preferred.utf8.count <= 60 { return preferred }
    if fallbackRoot == nil {
      var template = Array("/tmp/jank-XXXXXX".utf8CString)
      if template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil {
        fallbackRoot = String(cString: template)
      }
    }
    return (fallbackRoot ?? stateDirectory + "/run") + "/\(index)"
  }
}
