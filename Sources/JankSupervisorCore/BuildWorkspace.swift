import Glibc

/// Where a plugin's build runs when the plugin has a uid of its own: a copy of its folder,
/// owned by that uid, that the build may change as it likes, with a home of its own for
/// toolchain caches. The plugin folder itself stays the operator's and is never written by
/// the build; the supervisor takes the one file the build made (its output) back into it.
///
/// `<builds>/<id>/` is the supervisor's (0711); `work/` and `home/` are the plugin's (0700).
/// Whatever a build leaves in `work/` (links to /etc, folders where files were) is the
/// plugin's doing, so every path in it is opened one component at a time with O_NOFOLLOW,
/// relative to a descriptor: the supervisor never writes, reads or deletes through a link.
/// The copy persists between builds, so `.build` and Go caches make rebuilds incremental.
struct BuildWorkspace {
  let root: String
  let identity: (uid: uid_t, gid: gid_t)
  var work: String { root + "/work" }
  var home: String { root + "/home" }

  /// Refused before a build starts: the build would need what lies outside its folder.
  static func outsideReason(_ relative: String) -> String? {
    let components = relative.split(separator: "/")
    if relative.hasPrefix("/") || components.contains("..") {
      return "'\(relative)' is outside the plugin's folder, and a plugin with a uid of its own builds in a copy of its folder only"
    }
    return nil
  }

  init(root: String, identity: (uid: uid_t, gid: gid_t)) throws(BuildFailure) {
    self.root = root
    self.identity = identity
    // The folders above must let the plugin's uid reach its own (search, not read): the
    // state folder too, which a umask of 077 makes 0700.
    let parent = String(root[..<(root.lastIndex(of: "/") ?? root.endIndex)])
    let state = String(parent[..<(parent.lastIndex(of: "/") ?? parent.endIndex)])
    var stateInfo = stat()
    if !state.isEmpty, lstat(state, &stateInfo) == 0, stateInfo.st_mode & S_IFMT == S_IFDIR, stateInfo.st_uid == geteuid() {
      chmod(state, (stateInfo.st_mode & 0o7777) | 0o011)
    }
    for path in [parent, root] {
      if mkdir(path, 0o711) != 0, errno != EEXIST { throw Self.failure("cannot make \(path)", errno) }
      var info = stat()
      guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR, info.st_uid == geteuid() else {
        throw BuildFailure(summary: "\(path) is not a folder of the supervisor's own; remove it and build again", logTail: [])
      }
      chmod(path, (info.st_mode & 0o7777) | 0o011)
    }
    let rootFD = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    guard rootFD >= 0 else { throw Self.failure("cannot open \(root)", errno) }
    defer { close(rootFD) }
    for name in ["work", "home"] {
      if mkdirat(rootFD, name, 0o700) != 0, errno != EEXIST { throw Self.failure("cannot make \(root)/\(name)", errno) }
      // The supervisor owns `root`, so these two are what it made; they become the plugin's.
      guard fchownat(rootFD, name, identity.uid, identity.gid, AT_SYMLINK_NOFOLLOW) == 0 else { throw Self.failure("cannot give \(root)/\(name) to uid \(identity.uid)", errno) }
    }
  }

  /// Makes `work/` hold the plugin folder's files as they are now: new and changed files
  /// copied (with their mode and modification time), files gone from the folder removed.
  /// Build output (`bin`, `.build`…) is neither copied nor removed.
  func sync(from directory: String, keepingFolderOf binary: String) throws(BuildFailure) {
    let walk = PluginFolderWalk(directory: directory, ignoredFolders: BuildFingerprint.ignoredFolders)
    let workFD = open(work, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    guard workFD >= 0 else { throw Self.failure("cannot open \(work)", errno) }
    defer { close(workFD) }
    let binaryFolder = String(binary.split(separator: "/").dropLast().joined(separator: "/"))
    // The walk lists a folder before the folders in it.
    for folder in walk.folders + [binaryFolder] where !folder.isEmpty {
      let fd = try folderFD(folder, in: workFD, create: true)
      close(fd)
    }
    let sources = Set(walk.files)
    for file in walk.files {
      try copy(directory + "/" + file, to: file, in: workFD)
    }
    // The binary as it is, so that a build that leaves it alone (or only touches it) still
    // has an output; `takeOutput` keeps its times, so an unchanged one is not copied again.
    let normalized = BuildFingerprint.normalized(binary)
    if !sources.contains(normalized) {
      try copy(directory + "/" + normalized, to: normalized, in: workFD)
    }
    try removeFiles(notIn: sources.union([normalized]), folder: "", fd: workFD, depth: 0)
  }

  /// Copies the file the build made at `relative` (inside `work/`) to `destination`, through
  /// a temporary file and a rename: a running binary is never half-overwritten.
  func takeOutput(_ relative: String, to destination: String) throws(BuildFailure) {
    let workFD = open(work, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    guard workFD >= 0 else { throw Self.failure("cannot open \(work)", errno) }
    defer { close(workFD) }
    var components = relative.split(separator: "/").map(String.init)
    guard let name = components.popLast() else { throw BuildFailure(summary: "the build's output path is empty", logTail: []) }
    let parentFD = try components.isEmpty ? dup(workFD) : folderFD(components.joined(separator: "/"), in: workFD, create: false)
    defer { close(parentFD) }
    let source = openat(parentFD, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
    guard source >= 0 else {
      throw BuildFailure(summary: "the build succeeded but left no regular file at \(relative) (\(String(cString: strerror(errno))))", logTail: [])
    }
    defer { close(source) }
    var info = stat()
    guard fstat(source, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
      throw BuildFailure(summary: "the build succeeded but \(relative) is not a regular file", logTail: [])
    }
    let temporary = destination + ".jank-new"
    unlink(temporary)
    let target = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o755)
    guard target >= 0 else { throw Self.failure("cannot write \(temporary)", errno) }
    defer { close(target) }
    guard Self.copyBytes(from: source, to: target) else {
      unlink(temporary)
      throw Self.failure("cannot copy the build's output to \(temporary)", errno)
    }
    fchmod(target, 0o755)
    var times = [info.st_atim, info.st_mtim]
    futimens(target, &times)
    guard rename(temporary, destination) == 0 else {
      unlink(temporary)
      throw Self.failure("could not install the built binary at \(destination)", errno)
    }
  }

  // MARK: descriptor-relative file operations

  /// The folder at `relative` under `base`, each component opened without following a
  /// link; with `create`, missing folders are made (and given to the plugin) and whatever
  /// else stands in the way is removed.
  private func folderFD(_ relative: String, in base: Int32, create: Bool) throws(BuildFailure) -> Int32 {
    var fd = dup(base)
    for component in relative.split(separator: "/").map(String.init) {
      var next = openat(fd, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
      if next < 0, create {
        if errno == ELOOP || errno == ENOTDIR { unlinkat(fd, component, 0) }
        if mkdirat(fd, component, 0o755) == 0 { fchownat(fd, component, identity.uid, identity.gid, AT_SYMLINK_NOFOLLOW) }
        next = openat(fd, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
      }
      let error = errno
      close(fd)
      guard next >= 0 else { throw Self.failure("cannot open \(work)/\(relative)", error) }
      fd = next
    }
    return fd
  }

  private func copy(_ source: String, to relative: String, in workFD: Int32) throws(BuildFailure) {
    let components = relative.split(separator: "/").map(String.init)
    let name = components.last!
    let parentFD = try components.count == 1 ? dup(workFD) : folderFD(components.dropLast().joined(separator: "/"), in: workFD, create: true)
    defer { close(parentFD) }
    let input = open(source, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
    guard input >= 0 else { return }  // gone since the walk: the next sync removes its copy
    defer { close(input) }
    var from = stat()
    guard fstat(input, &from) == 0, from.st_mode & S_IFMT == S_IFREG else { return }
    var to = stat()
    if fstatat(parentFD, name, &to, AT_SYMLINK_NOFOLLOW) == 0, to.st_mode & S_IFMT == S_IFREG, to.st_size == from.st_size,
      to.st_mtim.tv_sec == from.st_mtim.tv_sec, to.st_mtim.tv_nsec == from.st_mtim.tv_nsec, to.st_mode & 0o777 == from.st_mode & 0o777
    {
      return  // unchanged since the last sync
    }
    let temporary = ".jank-sync-" + name
    unlinkat(parentFD, temporary, 0)
    let output = openat(parentFD, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
    guard output >= 0 else { throw Self.failure("cannot copy \(relative) into \(work)", errno) }
    defer { close(output) }
    guard Self.copyBytes(from: input, to: output) else { throw Self.failure("cannot copy \(relative) into \(work)", errno) }
    // The mode without set-id bits, the source's times (so make sees the source's age), the plugin's owner.
    fchmod(output, from.st_mode & 0o777)
    var times = [from.st_atim, from.st_mtim]
    futimens(output, &times)
    fchown(output, identity.uid, identity.gid)
    if to.st_mode & S_IFMT == S_IFDIR { unlinkat(parentFD, name, AT_REMOVEDIR) }
    guard renameat(parentFD, temporary, parentFD, name) == 0 else { throw Self.failure("cannot copy \(relative) into \(work)", errno) }
  }

  /// Removes the copies of files that are no longer sources (and links, which no copy is),
  /// outside build-output folders; the folder walk's caps apply.
  private func removeFiles(notIn sources: Set<String>, folder: String, fd: Int32, depth: Int) throws(BuildFailure) {
    guard depth <= PluginFolderWalk.maximumDepth, let stream = fdopendir(dup(fd)) else { return }
    var subfolders: [String] = []
    var stale: [String] = []
    while let entry = readdir(stream) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
      guard name != ".", name != ".." else { continue }
      let path = folder.isEmpty ? name : folder + "/" + name
      var info = stat()
      guard fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
      switch info.st_mode & S_IFMT {
      case S_IFDIR:
        if !BuildFingerprint.ignoredFolders.contains(name), !name.hasPrefix(".") { subfolders.append(name) }
      case S_IFREG:
        if !sources.contains(path), !(folder.isEmpty && name == "plugin.json") { stale.append(name) }
      case S_IFLNK:
        stale.append(name)
      default:
        continue
      }
    }
    closedir(stream)
    for name in stale { unlinkat(fd, name, 0) }
    for name in subfolders {
      let child = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
      guard child >= 0 else { continue }
      defer { close(child) }
      try removeFiles(notIn: sources, folder: folder.isEmpty ? name : folder + "/" + name, fd: child, depth: depth + 1)
    }
  }

  private static func copyBytes(from input: Int32, to output: Int32) -> Bool {
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
      let got = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
      if got < 0, errno == EINTR { continue }
      guard got >= 0 else { return false }
      if got == 0 { return true }
      var offset = 0
      while offset < got {
        let done = buffer.withUnsafeBytes { write(output, $0.baseAddress! + offset, got - offset) }
        if done < 0, errno == EINTR { continue }
        guard done > 0 else { return false }
        offset += done
      }
    }
  }

  private static func failure(_ what: String, _ code: Int32) -> BuildFailure {
    BuildFailure(summary: "\(what): \(String(cString: strerror(code)))", logTail: [])
  }
}
