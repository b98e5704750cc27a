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
    await withTaskGroup(of: Void.self) { group in
      for id in ids { group.addTask { _ = try? await supervisor.unregister(id: id) } }
    }
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
