import Crypto
import Foundation
import Glibc

/// What a plugin's binary was built from (design §9): SHA-256 over its source files, in
/// sorted order with their relative paths, and its build command. Recorded next to the
/// binary (`bin/.jank-build.json`) after each successful build; a plugin whose sources hash
/// differently is `source_only` and is rebuilt before it starts.
public enum BuildFingerprint {
  public struct Record: Codable, Sendable, Equatable {
    public var sha256: String
    public var command: [String]
    public var builtAt: String

    enum CodingKeys: String, CodingKey { case sha256, command, builtAt = "built_at" }
  }

  /// Folders that hold build output or tooling state, never sources.
  static let ignoredFolders: Set<String> = ["bin", ".build", ".gopath", ".git", ".jank", "node_modules"]

  public static func recordPath(manifest: PluginManifest, directory: String) -> String {
    ((directory + "/" + manifest.binary) as NSString).deletingLastPathComponent + "/.jank-build.json"
  }

  /// The hash of the plugin's sources now, or nil when it has no build.
  public static func compute(manifest: PluginManifest, directory: String, plan: BuildPlan) -> String {
    var hasher = SHA256()
    for word in plan.command {
      hasher.update(data: Data(word.utf8))
      hasher.update(data: [0])
    }
    for file in sourceFiles(manifest: manifest, directory: directory) {
      hasher.update(data: Data(file.utf8))
      hasher.update(data: [0])
      if let contents = FileManager.default.contents(atPath: directory + "/" + file) {
        hasher.update(data: Data(String(contents.count).utf8))
        hasher.update(data: [0])
        hasher.update(data: contents)
      }
    }
    return hasher.finalize().map { String(format: "%02x", $0) }.joined()
  }

  /// Relative paths of the plugin's source files, sorted: those matching plugin.json's
  /// `build.sources` globs, or every file but plugin.json and build output.
  static func sourceFiles(manifest: PluginManifest, directory: String) -> [String] {
    let patterns = manifest.build?.sources ?? []
    // What a build writes is never a source, wherever it lives: a binary at the folder's root
    // (e.g. a Makefile's `run`) would otherwise change the hash with every build.
    let record = relative(recordPath(manifest: manifest, directory: directory), to: directory)
    let outputs: Set<String> = Set([manifest.binary, manifest.binary + ".jank-new", record].map(normalized))
    var files: [String] = []
    var stack = [""]
    while let relative = stack.popLast() {
      let absolute = relative.isEmpty ? directory : directory + "/" + relative
      guard let names = try? FileManager.default.contentsOfDirectory(atPath: absolute) else { continue }
      for name in names {
        let path = relative.isEmpty ? name : relative + "/" + name
        var info = stat()
        guard lstat(absolute + "/" + name, &info) == 0 else { continue }
        if (info.st_mode & S_IFMT) == S_IFDIR {
          if !ignoredFolders.contains(name), !name.hasPrefix(".") { stack.append(path) }
        } else if (info.st_mode & S_IFMT) == S_IFREG, path != "plugin.json", !outputs.contains(path) {
          // Without FNM_PATHNAME `*` also crosses '/': "Sources/**" and "*.go" mean what they say.
          if patterns.isEmpty || patterns.contains(where: { fnmatch($0, path, 0) == 0 }) { files.append(path) }
        }
      }
    }
    return files.sorted()
  }

  /// "./bin//run" → "bin/run": paths as the folder walk spells them.
  static func normalized(_ path: String) -> String {
    path.split(separator: "/").filter { $0 != "." && !$0.isEmpty }.joined(separator: "/")
  }

  private static func relative(_ path: String, to directory: String) -> String {
    path.hasPrefix(directory + "/") ? String(path.dropFirst(directory.count + 1)) : path
  }

  public static func recorded(manifest: PluginManifest, directory: String) -> Record? {
    guard let data = FileManager.default.contents(atPath: recordPath(manifest: manifest, directory: directory)) else { return nil }
    return try? JSONDecoder().decode(Record.self, from: data)
  }

  static func write(_ record: Record, manifest: PluginManifest, directory: String) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(record).write(to: URL(fileURLWithPath: recordPath(manifest: manifest, directory: directory)), options: .atomic)
  }

  /// True when the plugin has a build and its binary is missing or was built from other
  /// sources (or by hand, with no record).
  public static func needsBuild(manifest: PluginManifest, directory: String) -> Bool {
    guard let plan = BuildPlan.plan(for: manifest, directory: directory) else { return false }
    guard access(directory + "/" + manifest.binary, X_OK) == 0 else { return true }
    return recorded(manifest: manifest, directory: directory)?.sha256 != compute(manifest: manifest, directory: directory, plan: plan)
  }
}
