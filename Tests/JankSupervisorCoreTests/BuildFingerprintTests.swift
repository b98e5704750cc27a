import Foundation
import JankControl
@testable import JankSupervisorCore
import Logging
import Testing

/// Change detection by content: a build records the sources' hash next to the binary, and
/// any change to a source or the build command makes the plugin `source_only` again.
@Suite struct BuildFingerprintTests {
  static let build = #","build":{"command":["sh","-c","mkdir -p bin && cp src/run.sh bin/run && chmod +x bin/run"],"sources":["src/**"]}"#

  @Test func aBuildRecordsTheHashAndAChangedSourceMakesThePluginSourceOnly() async throws {
    let folder = try PluginsFolder()
    try folder.add("p", manifest: manifest(id: "dev.t.p", extra: Self.build), files: ["src/run.sh": "#!/bin/sh\necho one\n", "notes.txt": "not a source"])
    let first = try #require(folder.find("p"))
    let pluginManifest = try #require(first.manifest)
    #expect(first.status == .sourceOnly)
    #expect(first.problems.first?.contains("not built yet") == true)

    let builder = Builder(logDirectory: folder.path + "/logs", logger: Logger(label: "test"))
    _ = try await builder.build(id: "dev.t.p", manifest: pluginManifest, directory: first.directory)
    let record = try #require(BuildFingerprint.recorded(manifest: pluginManifest, directory: first.directory))
    #expect(record.sha256.count == 64)
    #expect(folder.find("p")?.status == .available)

    // A file outside `sources` changes nothing…
    try "still not a source".write(toFile: first.directory + "/notes.txt", atomically: true, encoding: .utf8)
    #expect(folder.find("p")?.status == .available)
    // …a source file does.
    try "#!/bin/sh\necho two\n".write(toFile: first.directory + "/src/run.sh", atomically: true, encoding: .utf8)
    let changed = try #require(folder.find("p"))
    #expect(changed.status == .sourceOnly)
    #expect(changed.problems.first?.contains("sources changed") == true)
    // So does a new one.
    _ = try await builder.build(id: "dev.t.p", manifest: pluginManifest, directory: first.directory)
    #expect(folder.find("p")?.status == .available)
    try "x".write(toFile: first.directory + "/src/new.txt", atomically: true, encoding: .utf8)
    #expect(folder.find("p")?.status == .sourceOnly)
  }

  @Test func aBinaryWithoutARecordIsRebuiltAndOneWithoutABuildIsTrusted() throws {
    let folder = try PluginsFolder()
    try folder.add("built-by-hand", manifest: manifest(id: "dev.t.a", extra: Self.build), files: ["src/run.sh": "#!/bin/sh\n", "bin/run": "#!/bin/sh\n"], executable: ["bin/run"])
    #expect(folder.find("built-by-hand")?.status == .sourceOnly)
    try folder.add("prebuilt", manifest: manifest(id: "dev.t.b"), files: ["bin/run": "#!/bin/sh\n"], executable: ["bin/run"])
    #expect(folder.find("prebuilt")?.status == .available)
  }

  /// The digest cache hashes as sha256sum does (the plugin.json sha256 an operator writes).
  @Test func aFileDigestIsSha256sumsHex() throws {
    let path = NSTemporaryDirectory() + "jank-digest-\(UUID().uuidString)"
    try "abc".write(toFile: path, atomically: true, encoding: .utf8)
    defer { unlink(path) }
    #expect(FileDigests.shared.digest(of: path)?.1 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    #expect(hexDigits([0x00, 0x0f, 0xa0, 0xff]) == "000fa0ff")
  }

  @Test func theBuildCommandIsPartOfTheHash() throws {
    let folder = try PluginsFolder()
    try folder.add("p", manifest: manifest(id: "dev.t.p", extra: Self.build), files: ["src/run.sh": "#!/bin/sh\n"])
    let plugin = try #require(folder.find("p"))
    let manifest = try #require(plugin.manifest)
    let one = BuildFingerprint.compute(manifest: manifest, directory: plugin.directory, plan: BuildPlan(command: ["make"], output: nil))
    let two = BuildFingerprint.compute(manifest: manifest, directory: plugin.directory, plan: BuildPlan(command: ["make", "-j2"], output: nil))
    #expect(one != two)
  }
}
