import Foundation
import JankControl
@testable import JankSupervisorCore
import Logging
import Testing

/// How plugins are built: detected builders, the environment, one build at a time.
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
  /// Through the supervisor's own spawner and reaper: Foundation's Process and Pipe have
  /// closed descriptors twice under concurrency (swiftlang/swift#57827), and every test of
  /// the run shares this process.
  private func runOnce(_ path: String) async throws -> String {
    let child = try await ProcessSpawner.spawn(SpawnRequest(executable: path))
    ProcessReaper.shared.watch(pid: child.pid)
    close(child.stderr)
    let fd = child.stdout
    let output = await withCheckedContinuation { (continuation: CheckedContinuation<[UInt8], Never>) in
      Thread {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
          let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
          if n < 0, errno == EINTR { continue }
          if n <= 0 { break }
          bytes += chunk[0..<n]
        }
        close(fd)
        continuation.resume(returning: bytes)
      }.start()
    }
    _ = await ProcessReaper.shared.waitForExit(pid: child.pid)
    return String(decoding: output, as: UTF8.self)
  }
}

/// Builds run one at a time unless `maxParallel` says otherwise.
@Suite struct BuildConcurrencyTests {
  /// Two plugins whose builds append "start <name>" to one shared file, then wait (half a
  /// second, or with `waitForBoth` until both builds have started, at most 20 s), then append
  /// "end <name>"; returns the file's lines once both builds are done.
  func buildTwo(maxParallel: Int, waitForBoth: Bool = false) async throws -> [String] {
    let folder = try PluginsFolder()
    let journal = folder.path + "/journal"
    // A fixed pause would assume that the second build starts within it, which a loaded
    // machine does not promise; waiting for the other's "start" assumes nothing.
    let pause = waitForBoth
      ? #"for i in $(seq 200); do [ $(grep -c start \#(journal)) -ge 2 ] && break; sleep 0.1; done"#
      : "sleep 0.5"
    for name in ["a", "b"] {
      let command = #"["sh","-c","echo start \#(name) >> \#(journal); \#(pause); echo end \#(name) >> \#(journal); mkdir -p bin && printf '#!/bin/sh\\n' > bin/run && chmod +x bin/run"]"#
      try folder.add(name, manifest: manifest(id: "dev.t.\(name)", extra: #","build":{"command":\#(command)}"#))
    }
    let builder = Builder(logDirectory: folder.path + "/logs", maxParallel: maxParallel, logger: Logger(label: "test"))
    try await withThrowingTaskGroup(of: Void.self) { group in
      for name in ["a", "b"] {
        let plugin = try #require(folder.find(name))
        let pluginManifest = try #require(plugin.manifest)
        group.addTask { _ = try await builder.build(id: "dev.t.\(name)", manifest: pluginManifest, directory: plugin.directory) }
      }
      try await group.waitForAll()
    }
    return try String(contentsOfFile: journal, encoding: .utf8).split(separator: "\n").map(String.init)
  }

  @Test func byDefaultOneBuildRunsAtATime() async throws {
    let journal = try await buildTwo(maxParallel: 1)
    #expect(journal.count == 4)
    // Each build ends before the other starts.
    #expect(journal[0].hasPrefix("start") && journal[1].hasPrefix("end") && journal[2].hasPrefix("start"), "\(journal)")
  }

  @Test func maxParallelTwoLetsTwoBuildsOverlap() async throws {
    // Run one at a time, the first build would wait its 20 s out and end before the second starts.
    let journal = try await buildTwo(maxParallel: 2, waitForBoth: true)
    #expect(journal.count == 4)
    #expect(journal.prefix(2).allSatisfy { $0.hasPrefix("start") }, "\(journal)")
  }
}

/// A build runs plugin code: its output may be endless, and it must cost neither the
/// supervisor's disk nor its memory, while a failure still quotes the build's last lines.
@Suite struct BuildLogBoundTests {
  @Test func aFloodingBuildKeepsTheLogsStartAndEndAndSaysWhatWasLeftOut() async throws {
    let folder = try PluginsFolder()
    // 12 MiB of short lines, then the line a reader needs: why the build failed.
    let flood = "yes 0123456789012345678901234567890123456789012345678901234567890 | head -c 12582912; printf '\\\\nerror: the reason\\\\n'; exit 3"
    try folder.add("flood", manifest: manifest(id: "dev.t.flood", extra: #","build":{"command":["sh","-c","\#(flood)"]}"#))
    let plugin = try #require(folder.find("flood"))
    let builder = Builder(logDirectory: folder.path + "/logs", logger: Logger(label: "test"))
    await #expect {
      _ = try await builder.build(id: "dev.t.flood", manifest: try #require(plugin.manifest), directory: plugin.directory)
    } throws: { error in
      (error as? BuildFailure)?.logTail.last == "error: the reason"
    }
    let logPath = builder.logPath(id: "dev.t.flood")
    let size = try #require(try FileManager.default.attributesOfItem(atPath: logPath)[.size] as? Int)
    // Product bound: the first 8 MiB, then at most 1 MiB of the last lines and one marker line.
    #expect(size <= BuildLogFile.defaultMaxBytes + (1 << 20) + 200, "the build log is \(size) bytes")
    #expect(size >= BuildLogFile.defaultMaxBytes - 64)
    let lines = BuildLogFile.lastLines(ofFile: logPath, maxBytes: 4 << 20)
    #expect(lines.last == "error: the reason")
    let marker = try #require(lines.first { $0.hasPrefix("[jank-supervisor:") }, "no line says output was left out")
    #expect(marker.contains("lines of build output were left out"), "\(marker)")
  }
}

@Suite struct BuildCancellationTests {
  /// A plugin stopped (or a supervisor shut down) while its build runs: the build and what
  /// it started are killed at once, not left running to build_timeout_s.
  @Test func aCancelledBuildIsKilledWithItsChildren() async throws {
    let folder = try PluginsFolder()
    try folder.add("slow", manifest: manifest(id: "dev.t.slow", extra: #","build":{"command":["sh","-c","sleep 60 & echo $! > child.pid; wait"]}"#))
    let plugin = try #require(folder.find("slow"))
    let pluginManifest = try #require(plugin.manifest)
    let builder = Builder(logDirectory: folder.path + "/logs", logger: Logger(label: "test"))
    let build = Task { try await builder.build(id: "dev.t.slow", manifest: pluginManifest, directory: plugin.directory) }
    let pidFile = plugin.directory + "/child.pid"
    var child: pid_t?
    for _ in 0..<200 where child == nil {
      try await Task.sleep(for: .milliseconds(25))
      child = (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }
    let sleeper = try #require(child, "the build never started")

    build.cancel()
    await #expect {
      _ = try await build.value
    } throws: { error in
      "\(error)".contains("cancelled")
    }
    // The build's own child (same process group) is gone too; init reaps it.
    var gone = false
    for _ in 0..<200 where !gone {
      gone = kill(sleeper, 0) != 0 || ((try? String(contentsOfFile: "/proc/\(sleeper)/status", encoding: .utf8))?.contains("State:\tZ") ?? true)
      if !gone { try await Task.sleep(for: .milliseconds(25)) }
    }
    #expect(gone, "the build's sleep \(sleeper) outlived the cancelled build")
  }
}

