import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// JANK_TEST_STALL_PROBE=1: finds what stalls the test process. A task on the cooperative
/// pool and a timer on each NIO event loop beat every 50 ms; when a beat is 700 ms late, a
/// thread of its own has gdb print every thread's stack to /tmp/jank-stall-PID-N.txt.
enum StallProbe {
  private static let beats = Mutex<[String: ContinuousClock.Instant]>([:])

  static let started: Bool = {
    guard ProcessInfo.processInfo.environment["JANK_TEST_STALL_PROBE"] == "1" else { return false }
    Task.detached {
      while true {
        beats.withLock { $0["pool"] = .now }
        try? await Task.sleep(for: .milliseconds(50))
      }
    }
    for (n, loop) in MultiThreadedEventLoopGroup.singleton.makeIterator().enumerated() {
      loop.scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(50)) { _ in
        beats.withLock { $0["loop\(n)"] = .now }
      }
    }
    Thread {
      var dumps = 0
      var lastDump = ContinuousClock.now - .seconds(60)
      while dumps < 10 {
        usleep(100_000)
        let now = ContinuousClock.now
        let late = beats.withLock { $0.filter { now - $0.value > .milliseconds(700) }.keys.sorted() }
        guard !late.isEmpty, now - lastDump > .seconds(3) else { continue }
        dumps += 1
        lastDump = now
        let path = "/tmp/jank-stall-\(getpid())-\(dumps).txt"
        FileHandle.standardError.write(Data("stall probe: \(late.joined(separator: ",")) late; stacks in \(path)\n".utf8))
        let command = "gdb -p \(getpid()) -batch -ex 'thread apply all bt 40' > \(path) 2>&1"
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sh"), strdup("-c"), strdup(command), nil]
        if posix_spawn(&pid, "/bin/sh", nil, nil, argv, environ) == 0 {
          var status: Int32 = 0
          _ = waitpid(pid, &status, 0)
        }
        argv.forEach { free($0) }
      }
    }.start()
    return true
  }()
}
