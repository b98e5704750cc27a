/// Plugin bytes are data, never terminal control: text shown to the operator has its control
/// characters escaped (`\x1b`), as journalctl and systemctl do, so that a plugin's log line,
/// build output or error message cannot move the cursor, retitle the window (OSC), rewrite
/// earlier lines or hide text. `--json` keeps the exact characters, JSON-escaped.
enum TerminalText {
  /// Each line of `text` escaped; the newlines between lines and tabs are kept.
  static func escaped(_ text: String) -> String {
    text.split(separator: "\n", omittingEmptySubsequences: false).map(escapedLine).joined(separator: "\n")
  }

  static func escapedLine(_ line: Substring) -> String {
    guard line.unicodeScalars.contains(where: isControl) else { return String(line) }
    var out = ""
    out.reserveCapacity(line.utf8.count + 16)
    for scalar in line.unicodeScalars {
      if isControl(scalar) {
        let hex = String(scalar.value, radix: 16)
        out += scalar.value < 0x100 ? "\\x" + (hex.count < 2 ? "0" + hex : hex) : "\\u{" + hex + "}"
      } else {
        out.unicodeScalars.append(scalar)
      }
    }
    return out
  }

  /// C0 (but tab), DEL, C1, and the bidirectional overrides and isolates that reorder what
  /// follows them on screen.
  private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar.value {
    case 0x09: false
    case 0x00...0x1F, 0x7F...0x9F: true
    case 0x202A...0x202E, 0x2066...0x2069: true
    default: false
    }
  }
}
