import Foundation
import Glibc
import Synchronization
public import JankControl

/// A plugin folder under the plugins directory, read and checked.
public struct DiscoveredPlugin: Sendable {
  public var directory: String
  public var manifest: PluginManifest?
  public var problems: [String]
  public var status: PluginStatus

  /// Absolute path of the binary, once validated to stay inside the folder.
  public var binaryPath: String? {
    manifest.map { directory + "/" + $0.binary }
  }

  public var info: PluginDiscoveryInfo {
    PluginDiscoveryInfo(
      id: manifest?.id, name: manifest?.name, version: manifest?.version, type: manifest?.type,
      directory: directory, status: status, problems: problems)
  }
}

/// Finds `plugins/*/plugin.json` and classifies each folder (design §5).
public enum PluginDiscovery {
  /// Every plugin folder but those in `skipping` (full paths), which are not read at all.
  public static func scan(pluginsDirectory: String, skipping: Set<String> = []) -> [DiscoveredPlugin] {
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: pluginsDirectory) else { return [] }
    let directories = names.sorted().filter { !$0.hasPrefix(".") }.map { pluginsDirectory + "/" + $0 }.filter { !skipping.contains($0) }
    var found = inspectAll(directories)
    // Two folders claiming one id would make every call ambiguous: both are incomplete.
    var counts: [String: Int] = [:]
    for id in found.compactMap({ $0.manifest?.id }) { counts[id, default: 0] += 1 }
    let duplicated = Set(counts.filter { $0.value > 1 }.keys)
    for index in found.indices {
      if let id = found[index].manifest?.id, duplicated.contains(id) {
        found[index].problems.append("id '\(id)' is declared by more than one plugin folder; give each plugin its own id")
        found[index].status = .incomplete
      }
    }
    return found
  }

  /// Each folder that is one, in the order given. A thousand folders are a few syscalls and
  /// a hash each, so they are shared among the cores (a `list` waits for all of them).
  private static func inspectAll(_ directories: [String]) -> [DiscoveredPlugin] {
    @Sendable func inspectIfFolder(_ directory: String) -> DiscoveredPlugin? {
      var isDirectory: ObjCBool = false
      guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else { return nil }
      return inspect(directory: directory)
    }
    let workers = min(ProcessInfo.processInfo.activeProcessorCount, directories.count / 64)
    guard workers > 1 else { return directories.compactMap(inspectIfFolder) }
    let results = Mutex<[(Int, DiscoveredPlugin)]>([])
    DispatchQueue.concurrentPerform(iterations: workers) { worker in
      let mine = stride(from: worker, to: directories.count, by: workers).compactMap { index in inspectIfFolder(directories[index]).map { (index, $0) } }
      results.withLock { $0 += mine }
    }
    return results.withLock { $0 }.sorted { $0.0 < $1.0 }.map(\.1)
  }

  private static let manifests = ParsedFileCache<Result<PluginManifest, ManifestError>>(maxBytes: 1 << 20)

  public static func inspect(directory: String) -> DiscoveredPlugin {
    let parsed = manifests.value(of: directory + "/plugin.json") { (data: Data) -> Result<PluginManifest, ManifestError> in
      do throws(ManifestError) {
        return .success(try PluginManifest.parse(data))
      } catch {
        return .failure(error)
      }
    } refuse: { reason in
      .failure(.invalid(["plugin.json \(reason)"]))
    }
    let manifest: PluginManifest
    switch parsed {
    case nil:
      return DiscoveredPlugin(directory: directory, manifest: nil, problems: ["plugin.json is missing"], status: .incomplete)
    case .failure(let error):
      return DiscoveredPlugin(directory: directory, manifest: nil, problems: error.problems, status: .incomplete)
    case .success(let value):
      manifest = value
    }
    var problems: [String] = []
    let binaryPath = directory + "/" + manifest.binary
    if let escape = symlinkEscape(path: binaryPath, root: directory) {
      problems.append("binary '\(manifest.binary)' \(escape)")
      return DiscoveredPlugin(directory: directory, manifest: nil, problems: problems, status: .incomplete)
    }
    let buildable = BuildPlan.plan(for: manifest, directory: directory) != nil
    if access(binaryPath, X_OK) == 0 {
      if buildable, BuildFingerprint.needsBuild(manifest: manifest, directory: directory) {
        return DiscoveredPlugin(
          directory: directory, manifest: manifest,
          problems: ["sources changed since '\(manifest.binary)' was built; it is rebuilt on register or start"] + folderProblems(directory), status: .sourceOnly)
      }
      return DiscoveredPlugin(directory: directory, manifest: manifest, problems: buildable ? folderProblems(directory) : [], status: .available)
    }
    if buildable {
      return DiscoveredPlugin(
        directory: directory, manifest: manifest,
        problems: ["binary '\(manifest.binary)' is not built yet; it is built on register or start"], status: .sourceOnly)
    }
    problems.append("binary '\(manifest.binary)' is missing or not executable, and there is no build (add \"build\" to plugin.json or a Package.swift)")
    return DiscoveredPlugin(directory: directory, manifest: manifest, problems: problems, status: .incomplete)
  }

  /// The fingerprint's walk (just made by needsBuild) left part of the folder out.
  static func folderProblems(_ directory: String) -> [String] {
    PluginFolderWalk.problem(in: directory).map { [$0 + "; those sources are neither hashed nor watched"] } ?? []
  }

  /// Why `path` resolves outside `root` through a symlink, or nil when it stays inside
  /// (or does not exist yet: it will be created inside by the build).
  static func symlinkEscape(path: String, root: String) -> String? {
    // The common case without realpath (a readlink per component, twice): no component
    // below the folder is a link, so the path stays inside (plugin.json's paths have no "..").
    if path.hasPrefix(root + "/"), noLinkBelow(root, in: path) { return nil }
    guard let realRoot = realPath(root) else { return "cannot be checked: the plugin folder is unreadable" }
    // Resolve the longest existing prefix: a dangling link to /etc is still an escape.
    var candidate = path
    while realPath(candidate) == nil {
      var info = stat()
      if lstat(candidate, &info) == 0, (info.st_mode & S_IFMT) == S_IFLNK {
        return "is a symlink that points outside the plugin folder or nowhere"
      }
      guard let slash = candidate.lastIndex(of: "/"), slash > candidate.startIndex else { return nil }
      candidate = String(candidate[..<slash])
    }
    guard let resolved = realPath(candidate) else { return nil }
    if resolved == realRoot || resolved.hasPrefix(realRoot + "/") { return nil }
    return "resolves to \(resolved), outside the plugin folder"
  }

  /// Whether each component of `path` below `root` exists and is not a link (lstat each).
  private static func noLinkBelow(_ root: String, in path: String) -> Bool {
    var current = root
    for component in path.dropFirst(root.count + 1).split(separator: "/") {
      guard component != "..", component != "." else { return false }
      current += "/" + component
      var info = stat()
      guard lstat(current, &info) == 0, (info.st_mode & S_IFMT) != S_IFLNK else { return false }
    }
    return true
  }

  static func realPath(_ path: String) -> String? {
    guard let resolved = realpath(path, nil) else { return nil }
    defer { free(resolved) }
    return String(cString: resolved)
  }
}
