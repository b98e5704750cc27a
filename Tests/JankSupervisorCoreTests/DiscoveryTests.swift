import Foundation
import JankControl
import Synchronization
import JankSupervisorCore
import Testing

/// A temporary plugins folder that tests fill with plugin folders.
final class PluginsFolder {
  let path = "/tmp/jank-disc-\(UUID().uuidString.prefix(8))"

  init() throws {
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  }

  deinit { try? FileManager.default.removeItem(atPath: path) }

  func add(_ name: String, manifest: String?, files: [String: String] = [:], executable: [String] = []) throws {
    let dir = path + "/" + name
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    if let manifest { try manifest.write(toFile: dir + "/plugin.json", atomically: true, encoding: .utf8) }
    for (file, content) in files {
      try FileManager.default.createDirectory(atPath: (dir + "/" + file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
      try content.write(toFile: dir + "/" + file, atomically: true, encoding: .utf8)
    }
    for file in executable { chmod(dir + "/" + file, 0o755) }
  }

  func find(_ name: String) -> DiscoveredPlugin? {
    PluginDiscovery.scan(pluginsDirectory: path).first { $0.directory.hasSuffix("/" + name) }
  }
}

func manifest(id: String, binary: String = "bin/run", extra: String = "") -> String {
  #"{"id":"\#(id)","name":"N","version":"1.0.0","type":"handler","binary":"\#(binary)"\#(extra)}"#
}

@Suite struct DiscoveryTests {
  @Test func binaryPresentIsAvailable() throws {
    let folder = try PluginsFolder()
    try folder.add("a", manifest: manifest(id: "dev.t.a"), files: ["bin/run": "#!/bin/sh\n"], executable: ["bin/run"])
    #expect(folder.find("a")?.status == .available)
  }

  @Test func missingBinaryWithABuildIsSourceOnly() throws {
    let folder = try PluginsFolder()
    try folder.add("b", manifest: manifest(id: "dev.t.b", extra: #","build":{"command":["make"]}"#))
    try folder.add("c", manifest: manifest(id: "dev.t.c"), files: ["Package.swift": "// swift-tools-version:6.0\n"])
    #expect(folder.find("b")?.status == .sourceOnly)
    #expect(folder.find("c")?.status == .sourceOnly)
  }

  @Test func missingBinaryWithoutABuildIsIncomplete() throws {
    let folder = try PluginsFolder()
    try folder.add("d", manifest: manifest(id: "dev.t.d"))
    let found = try #require(folder.find("d"))
    #expect(found.status == .incomplete)
    #expect(found.problems.first?.contains("no build") == true)
  }

  /// plugin.json and build records are parsed once per version of the file: an edit of the
  /// same size, in the same second, written in place, is still read again.
  @Test func anEditedManifestIsReadAgainThoughItsSizeIsTheSame() throws {
    let folder = try PluginsFolder()
    try folder.add("h", manifest: manifest(id: "dev.t.h"), files: ["bin/run": "#!/bin/sh\n"], executable: ["bin/run"])
    #expect(folder.find("h")?.manifest?.id == "dev.t.h")
    let path = folder.path + "/h/plugin.json"
    let handle = try #require(FileHandle(forWritingAtPath: path))
    try handle.write(contentsOf: Data(manifest(id: "dev.t.i").utf8))
    try handle.close()
    #expect(folder.find("h")?.manifest?.id == "dev.t.i")
    try "{ nope".write(toFile: path, atomically: true, encoding: .utf8)
    #expect(folder.find("h")?.status == .incomplete)
    unlink(path)
    #expect(folder.find("h")?.problems == ["plugin.json is missing"])
  }

  @Test func missingOrMalformedManifestIsIncompleteWithTheReason() throws {
    let folder = try PluginsFolder()
    try folder.add("e", manifest: nil)
    try folder.add("f", manifest: "{ nope")
    try folder.add("g", manifest: #"{"id":"dev.t.g","name":1,"binary":"../x"}"#)
    #expect(folder.find("e")?.problems == ["plugin.json is missing"])
    #expect(folder.find("f")?.problems.first?.contains("not valid JSON") == true)
    let g = try #require(folder.find("g"))
    #expect(g.status == .incomplete)
    #expect(g.problems.count == 4)  // name, version, type and binary: one problem never hides another
  }

  /// A plugin can replace its own plugin.json at run time. A FIFO would block the read for
  /// good, a link could point anywhere, a huge file would be read whole: each is refused from
  /// its lstat, unread, with a sentence.
  @Test func aManifestThatIsAFIFOALinkOrHugeIsRefusedUnread() throws {
    let folder = try PluginsFolder()
    for name in ["fifo", "link", "huge"] {
      try folder.add(name, manifest: nil, files: ["bin/run": "#!/bin/sh\n", "real.json": manifest(id: "dev.t.\(name)")], executable: ["bin/run"])
    }
    #expect(mkfifo(folder.path + "/fifo/plugin.json", 0o644) == 0)
    #expect(symlink("real.json", folder.path + "/link/plugin.json") == 0)
    #expect(truncate(folder.path + "/huge/real.json", 2 << 20) == 0 && rename(folder.path + "/huge/real.json", folder.path + "/huge/plugin.json") == 0)

    // On a thread of its own, so that a scan blocked in the FIFO fails the test, not hangs it.
    let scanned = DispatchSemaphore(value: 0)
    let found = Mutex<[DiscoveredPlugin]>([])
    let path = folder.path
    Thread.detachNewThread {
      let plugins = PluginDiscovery.scan(pluginsDirectory: path)
      found.withLock { $0 = plugins }
      scanned.signal()
    }
    if scanned.wait(timeout: .now() + 10) == .timedOut {
      Issue.record("the scan is blocked reading the FIFO")
      let writer = open(folder.path + "/fifo/plugin.json", O_WRONLY | O_NONBLOCK)
      close(writer)  // the blocked reader now reads the end
      scanned.wait()
    }
    let plugins = found.withLock { $0 }
    func problems(_ name: String) -> [String] { plugins.first { $0.directory.hasSuffix("/" + name) }?.problems ?? ["not found"] }
    #expect(problems("fifo") == ["plugin.json is not a regular file (a FIFO, socket or device)"])
    #expect(problems("link").first?.hasPrefix("plugin.json is a symbolic link") == true, "\(problems("link"))")
    #expect(problems("huge") == ["plugin.json is larger than 1 MiB"])
    #expect(plugins.allSatisfy { $0.status == .incomplete })
  }

  @Test func symlinkEscapingThePluginFolderIsIncomplete() throws {
    let folder = try PluginsFolder()
    try folder.add("h", manifest: manifest(id: "dev.t.h"))
    try FileManager.default.createDirectory(atPath: folder.path + "/h/bin", withIntermediateDirectories: true)
    try FileManager.default.createSymbolicLink(atPath: folder.path + "/h/bin/run", withDestinationPath: "/bin/sh")
    try folder.add("i", manifest: manifest(id: "dev.t.i", binary: "out/run"))
    try FileManager.default.createSymbolicLink(atPath: folder.path + "/i/out", withDestinationPath: "/usr/bin")
    for name in ["h", "i"] {
      let found = try #require(folder.find(name))
      #expect(found.status == .incomplete, "\(name)")
      #expect(found.problems.first?.contains("outside the plugin folder") == true, "\(name): \(found.problems)")
    }
  }

  @Test func twoFoldersWithOneIDAreBothIncomplete() throws {
    let folder = try PluginsFolder()
    for name in ["j", "k"] {
      try folder.add(name, manifest: manifest(id: "dev.t.same"), files: ["bin/run": "#!/bin/sh\n"], executable: ["bin/run"])
    }
    #expect(folder.find("j")?.status == .incomplete)
    #expect(folder.find("k")?.problems.last?.contains("more than one") == true)
  }
}
