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

  /// Plugins that run as other users must reach their folders: then the root (and the state
  /// folder above it) get search permission for others, never read permission.
  private let traversable: Bool
  private var rootPrepared = false

  init(stateDirectory: String, traversable: Bool = false) {
    self.stateDirectory = stateDirectory
    self.traversable = traversable
  }

  mutating func next() -> String {
    index += 1
    let preferred = stateDirectory + "/run/\(index)"
    if preferred.utf8.count <= 60 {
      prepare(root: stateDirectory + "/run", above: stateDirectory)
      return preferred
    }
    if fallbackRoot == nil {
      var template = Array("/tmp/jank-XXXXXX".utf8CString)
      if template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil {
        fallbackRoot = String(cString: template)
      }
    }
    prepare(root: fallbackRoot ?? stateDirectory + "/run", above: fallbackRoot == nil ? stateDirectory : nil)
    return (fallbackRoot ?? stateDirectory + "/run") + "/\(index)"
  }

  private mutating func prepare(root: String, above: String?) {
    guard traversable, !rootPrepared else { return }
    rootPrepared = true
    for path in [above, root].compactMap({ $0 }) {
      mkdir(path, 0o711)
      var info = stat()
      if stat(path, &info) == 0 { chmod(path, (info.st_mode & 0o7777) | 0o011) }
    }
  }
}
