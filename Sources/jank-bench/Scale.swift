import ArgumentParser
import Foundation
import Glibc
import JankControl
import JankJSON
import JankSupervisorCore

/// Many copies of hello-world under one supervisor (this process): time until all are
/// ready, the supervisor's RSS and CPU while idle, and one execute on each.
enum Scale {
  static func run(count: Int, supervisor: Supervisor, workspace: BenchWorkspace, swiftBinary: String, idleSeconds: Int) async throws {
    let ids = try (0..<count).map { i -> String in
      let name = "scale\(count)-\(i)"
      let dir = workspace.plugins + "/" + name
      try FileManager.default.createDirectory(atPath: dir + "/bin", withIntermediateDirectories: true)
      let id = "dev.bench.\(name)"
      try #"{"id":"\#(id)","name":"\#(name)","version":"1.0.0","type":"handler","binary":"bin/hello-world"}"#
        .write(toFile: dir + "/plugin.json", atomically: true, encoding: .utf8)
      // A hard link: a thousand copies of the binary cost no disk.
      try FileManager.default.linkItem(atPath: swiftBinary, toPath: dir + "/bin/hello-world")
      return id
    }
    let clock = ContinuousClock()
    let begin = clock.now
    let failed = await withTaskGroup(of: Bool.self) { group in
      for id in ids { group.addTask { (try? await supervisor.register(id: id))?.status != .ready } }
      var failed = 0
      for await failure in group where failure { failed += 1 }
      return failed
    }
    let ready = clock.now - begin
    let rss = residentMegabytes()
    let cpuBefore = cpuSeconds()
    try await Task.sleep(for: .seconds(idleSeconds))
    let idleCPU = (cpuSeconds() - cpuBefore) / Double(idleSeconds) * 100
    let executeBegin = clock.now
    var executeFailures = 0
    for id in ids {
      do {
        _ = try await supervisor.execute(id: id, method: "greet", args: ["name": "scale"], timeoutMs: nil)
      } catch {
        executeFailures += 1
      }
    }
    let executes = clock.now - executeBegin
    print(String(
      format: "scale %5d plugins: all ready in %.2f s (%d failed), supervisor RSS %.0f MB, idle CPU %.2f %% over %d s, one execute on each in %.2f s (%d failed)",
      count, ready.seconds, failed, rss, idleCPU, idleSeconds, executes.seconds, executeFailures))
    try await listFigures(count: count, supervisor: supervisor, workspace: workspace)
    await withTaskGroup(of: Void.self) { group in
      for id in ids { group.addTask { _ = try? await supervisor.unregister(id: id) } }
    }
  }

  /// `plugin.list` as `jankctl list` makes it (over the control socket), with the `count`
  /// plugins registered and `count` more folders beside them that are not: each of those has
  /// a build and a 1 MiB source, so every list fingerprints them all. The first list hashes
  /// the sources; the later ones must answer from the digest cache whatever the sources weigh.
  static func listFigures(count: Int, supervisor: Supervisor, workspace: BenchWorkspace) async throws {
    let client = try await ControlClient.connect(path: workspace.socket)
    let clock = ContinuousClock()
    func list(unregistered: Int) async throws -> Duration {
      let begin = clock.now
      let answer = try await client.call(ControlMethods.list, ListParams(), timeout: .seconds(120))
      guard answer.registered.count >= count, answer.unregistered.count >= unregistered else {
        throw ValidationError("list showed \(answer.registered.count) registered and \(answer.unregistered.count) unregistered plugins, not \(count) and \(unregistered)")
      }
      return clock.now - begin
    }
    let registeredOnly = try await Measure.median(5) { try await list(unregistered: 0) }
    let folders = try (0..<count).map { i -> String in
      let dir = workspace.plugins + "/unregistered\(count)-\(i)"
      try FileManager.default.createDirectory(atPath: dir + "/src", withIntermediateDirectories: true)
      try FileManager.default.createDirectory(atPath: dir + "/bin", withIntermediateDirectories: true)
      // A binary whose build record names other sources: every scan hashes the sources to
      // compare them.
      try "#!/bin/sh\n".write(toFile: dir + "/bin/run", atomically: true, encoding: .utf8)
      chmod(dir + "/bin/run", 0o755)
      try #"{"sha256":"0000","command":["true"],"built_at":"2026-01-01T00:00:00Z"}"#.write(toFile: dir + "/bin/.jank-build.json", atomically: true, encoding: .utf8)
      try #"{"id":"dev.bench.unregistered\#(count)-\#(i)","name":"u","version":"1.0.0","type":"handler","binary":"bin/run","build":{"command":["true"]}}"#
        .write(toFile: dir + "/plugin.json", atomically: true, encoding: .utf8)
      // Sparse: a thousand of them cost no disk, and hashing reads every byte all the same.
      let fd = open(dir + "/src/data.bin", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
      guard fd >= 0, ftruncate(fd, 1 << 20) == 0 else { throw ValidationError("cannot create \(dir)/src/data.bin") }
      close(fd)
      return dir
    }
    defer { for dir in folders { try? FileManager.default.removeItem(atPath: dir) } }
    let first = try await list(unregistered: count)
    let later = try await Measure.median(5) { try await list(unregistered: count) }
    await client.close()
    // The same folders scanned in this process, without the control hop: what of `then` is
    // the scan, and what is encoding and sending the answer.
    let directory = workspace.plugins
    let scan = try await Measure.median(5) {
      let begin = clock.now
      let found = PluginDiscovery.scan(pluginsDirectory: directory)
      guard found.count >= count else { throw ValidationError("the scan found \(found.count) folders, not \(count)") }
      return clock.now - begin
    }
    // Where the rest goes, with both sets of folders: the supervisor's answer, its JSON
    // encoding (as the control channel encodes it) and the client's decoding.
    var answer = await supervisor.list()
    let gather = try await Measure.median(5) {
      let begin = clock.now
      answer = await supervisor.list()
      return clock.now - begin
    }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    var encoded = try encoder.encode(answer)
    let encode = try await Measure.median(5) {
      let begin = clock.now
      encoded = try encoder.encode(answer)
      return clock.now - begin
    }
    let decode = try await Measure.median(5) {
      let begin = clock.now
      _ = try JSONDecoder().decode(PluginList.self, from: encoded)
      return clock.now - begin
    }
    print(String(
      format: "scale %5d plugins: list over the control socket, median of 5: %.1f ms registered only; with %d more folders (a build and 1 MiB of sources each, not registered): first %.1f ms, then %.1f ms (the scan alone, in process: %.1f ms)",
      count, (registeredOnly ?? .zero).seconds * 1000, count, first.seconds * 1000, (later ?? .zero).seconds * 1000, (scan ?? .zero).seconds * 1000))
    print(String(
      format: "scale %5d plugins: of the later list, in process: the supervisor's answer %.1f ms, encoding it (%d KiB of JSON) %.1f ms, decoding it %.1f ms",
      count, (gather ?? .zero).seconds * 1000, encoded.count >> 10, (encode ?? .zero).seconds * 1000, (decode ?? .zero).seconds * 1000))
  }

  static func residentMegabytes() -> Double {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
      let kb = Double(line.split(separator: " ").dropFirst().first ?? "")
    else { return 0 }
    return kb / 1024
  }

  static func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
  }
}
