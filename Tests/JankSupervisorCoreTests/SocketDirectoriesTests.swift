import Foundation
import Testing

@testable import JankSupervisorCore

/// Socket folders live where no other user can make or swap them.
@Suite struct SocketDirectoriesTests {
  @Test func aShortStatePathKeepsTheSocketsUnderTheStateFolder() {
    var directories = SocketDirectories(stateDirectory: "/var/lib/jank")
    #expect(directories.next() == "/var/lib/jank/run/1")
    #expect(directories.next() == "/var/lib/jank/run/2")
  }

  /// A long state path falls back to /tmp, in a folder mkdtemp made: 0700, ours, and a
  /// different unguessable name for each supervisor (before: /tmp/jank-<uid>-<pid>, which
  /// another user could make first).
  @Test func aLongStatePathGetsAPrivateUnpredictableFolderInTmp() throws {
    let long = "/var/lib/" + String(repeating: "x", count: 80)
    var first = SocketDirectories(stateDirectory: long)
    var second = SocketDirectories(stateDirectory: long)
    let one = first.next()
    let two = second.next()
    let rootOne = (one as NSString).deletingLastPathComponent
    let rootTwo = (two as NSString).deletingLastPathComponent
    defer { rmdir(rootOne); rmdir(rootTwo) }
    #expect(rootOne.hasPrefix("/tmp/jank-") && rootOne != rootTwo)
    #expect(rootOne != "/tmp/jank-\(getuid())-\(getpid())")
    var info = stat()
    #expect(lstat(rootOne, &info) == 0)
    #expect((info.st_mode & S_IFMT) == S_IFDIR && (info.st_mode & 0o777) == 0o700 && info.st_uid == geteuid())
    #expect(one.utf8.count <= 60)
    #expect(first.next() == rootOne + "/2")
  }
}
