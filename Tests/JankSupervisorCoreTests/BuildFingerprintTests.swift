import Foundation
import JankControl
import JankSupervisorCore
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

@Suite struct BuilderTests {
  @Test func aGoFolderWithOnlyMainGoBuildsOfflineInGOPATHMode() async throws {
    let folder = try PluginsFolder()
    try folder.add("gomain", manifest: manifest(id: "dev.t.gomain"), files: ["main.go": "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hi\") }\n"])
    let plugin = try #require(folder.find("gomain"))
    #expect(plugin.status == .sourceOnly)
    let builder = Builder(logDirectory: folder.path + "/logs", logger: Logger(label: "test"))
    _ = try await builder.build(id: "dev.t.gomain", manifest: try #require(plugin.manifest), directory: plugin.directory)
    #expect(FileManager.default.isExecutableFile(atPath: plugin.directory + "/bin/run"))
    #expect(folder.find("gomain")?.status == .available)
  }
}

@Suite struct BuildDetectionTests {
  /// A Makefile plugin whose binary sits at the folder's root, next to its sources: the
  /// binary and the build record are build output, so a build leaves it up to date.
  @Test func aMakefileIsDetectedAndItsOutputIsNeverHashedAsASource() async throws {
    let folder = try PluginsFolder()
    let makefile = "run: run.sh\n\tcp run.sh run && chmod +x run\n\t@echo CGO_ENABLED=$$CGO_ENABLED\n"
    try folder.add("mk", manifest: manifest(id: "dev.t.mk", binary: "run"), files: ["Makefile": makefile, "run.sh": "#!/bin/sh\necho one\n"])
    let plugin = try #require(folder.find("mk"))
    let pluginManifest = try #require(plugin.manifest)
    #expect(BuildPlan.plan(for: pluginManifest, directory: plugin.directory) == BuildPlan(command: ["make"], output: nil))
    #expect(plugin.status == .sourceOnly)

    let builder = Builder(logDirectory: folder.path + "/logs", logger: Logger(label: "test"))
    let log = try await builder.build(id: "dev.t.mk", manifest: pluginManifest, directory: plugin.directory)
    #expect(log.contains("CGO_ENABLED=0"), "builds run with cgo off: \(log)")
    #expect(FileManager.default.fileExists(atPath: plugin.directory + "/.jank-build.json"))
    #expect(folder.find("mk")?.status == .available, "\(folder.find("mk")?.problems ?? [])")
    #expect(!BuildFingerprint.needsBuild(manifest: pluginManifest, directory: plugin.directory))
    try "#!/bin/sh\necho two\n".write(toFile: plugin.directory + "/run.sh", atomically: true, encoding: .utf8)
    #expect(folder.find("mk")?.status == .sourceOnly)
  }

  /// A go.mod folder builds in module mode, offline, with cgo off: a file that only compiles
  /// with cgo would break the build otherwise.
  @Test func aGoModuleIsDetectedAndBuiltOfflineWithCgoOff() async throws {
    let folder = try PluginsFolder()
    try folder.add(
      "gomod", manifest: manifest(id: "dev.t.gomod"),
      files: [
        "go.mod": "module example.com/gomod\n\ngo 1.19\n",
        "main.go": "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hi\") }\n",
        "cgo_guard.go": "//go:build cgo\n\npackage main\n\nvar _ = thisFileOnlyCompilesWithCgoEnabled\n",
      ])
    let plugin = try #require(folder.find("gomod"))
    let pluginManifest = try #require(plugin.manifest)
    #expect(BuildPlan.plan(for: pluginManifest, directory: plugin.directory) == BuildPlan(command: ["go", "build", "-o", "bin/run", "."], output: nil))
    let builder = Builder(logDirectory: folder.path + "/logs", logger: Logger(label: "test"))
    _ = try await builder.build(id: "dev.t.gomod", manifest: pluginManifest, directory: plugin.directory)
    let run = try await runOnce(plugin.directory + "/bin/run")
    #expect(run == "hi\n")
    #expect(folder.find("gomod")?.status == .available)
  }

  @Test func aSwiftPackageIsBuiltAsItsReleaseProductAndCopiedToTheBinary() throws {
    let folder = try PluginsFolder()
    try folder.add("spm", manifest: manifest(id: "dev.t.spm", binary: "bin/greeter"), files: ["Package.swift": "// swift-tools-version:6.0\n"])
    let plugin = try #require(folder.find("spm"))
    let plan = BuildPlan.plan(for: try #require(plugin.manifest), directory: plugin.directory)
    #expect(plan == BuildPlan(command: ["swift", "build", "-c", "release", "--product", "greeter"], output: ".build/release/greeter"))
    #expect(plugin.status == .sourceOnly)
  }

  /// The program's stdout.
  private func runOnce(_ path: String) async throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
  }
}

@Suite struct PluginLogTests {
  @Test(arguments: [
    (#"{"@level":"warn","@message":"disk low","@timestamp":"2026-11-25T08:00:00.000000Z","free_mb":12}"#, Logger.Level.warning, "disk low"),
    ("[ERROR] cannot open config", .error, "cannot open config"),
    ("[DEBUG]  details", .debug, "details"),
    ("[WARN] careful", .warning, "careful"),
    ("plain text", .info, "plain text"),
    (#"{"not":"hclog"}"#, .info, #"{"not":"hclog"}"#),
  ])
  func hclogJSONAndLevelPrefixesBecomeLogRecords(_ line: String, _ level: Logger.Level, _ message: String) {
    let (parsedLevel, parsedMessage, metadata) = PluginLog.interpret(line)
    #expect(parsedLevel == level)
    #expect(parsedMessage == message)
    if line.contains("free_mb") { #expect(metadata["free_mb"] == "12") }
  }
}
