import Foundation
import JankControl

// How exits and times are told in PluginInfo and `last_exit`.

extension ExitStatus {
  var code: Int? { if case .exited(let c) = self { return Int(c) } else { return nil } }
  var signal: Int? { if case .signaled(let s) = self { return Int(s) } else { return nil } }
}

extension LastExit {
  init(reason: Reason, exit: ExitStatus?) {
    self.init(reason: reason, code: exit?.code, signal: exit?.signal, at: ISO8601.now())
  }

  init(reason exit: ExitStatus) {
    switch exit {
    case .exited(let code): self.init(reason: .exited, code: Int(code), at: ISO8601.now())
    case .signaled(let signal) where signal == SIGXCPU: self.init(reason: .cpuLimit, signal: Int(signal), at: ISO8601.now())
    case .signaled(let signal): self.init(reason: .signaled, signal: Int(signal), at: ISO8601.now())
    }
  }
}

enum ISO8601 {
  static func now() -> String { format(Date()) }
  static func format(_ date: Date) -> String {
    date.formatted(.iso8601)
  }
}

extension Duration {
  /// For messages: "300 ms" below ten seconds, "12.5 s" above.
  var readable: String {
    let ms = (seconds * 1000).rounded()
    return ms < 10_000 ? "\(Int(ms)) ms" : "\((ms / 100).rounded() / 10) s"
  }
}
