@testable import JankSupervisorCore
import Logging
import Synchronization
import Testing

/// A handler that keeps every record, to see what PluginLog forwards to swift-log.
final class RecordingLogHandler: LogHandler, Sendable {
  struct Record: Sendable {
    var level: Logger.Level
    var message: String
    var metadata: Logger.Metadata
  }
  private let storage = Mutex<(records: [Record], metadata: Logger.Metadata)>(([], [:]))
  var records: [Record] { storage.withLock { $0.records } }

  var metadata: Logger.Metadata {
    get { storage.withLock { $0.metadata } }
    set { storage.withLock { $0.metadata = newValue } }
  }
  var logLevel: Logger.Level {
    get { .trace }
    set {}
  }
  subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }
  func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
    storage.withLock { $0.records.append(Record(level: level, message: "\(message)", metadata: $0.metadata.merging(metadata ?? [:]) { $1 })) }
  }
}

@Suite struct PluginLogForwardingTests {
  @Test func linesReachSwiftLogWithThePluginIDAndTheirLevel() {
    let handler = RecordingLogHandler()
    let log = PluginLog(pluginID: "dev.t.logger", logger: Logger(label: "test") { _ in handler })
    log.append(#"{"@level":"error","@message":"disk full","@timestamp":"2026-11-25T08:00:00.000000Z","free_mb":0}"#, stream: "stderr")
    log.append("[WARN] slow disk", stream: "stderr")
    let records = handler.records
    #expect(records.count == 2)
    #expect(records.first?.level == .error)
    #expect(records.first?.message == "disk full")
    #expect(records.first?.metadata["plugin_id"] == "dev.t.logger")
    #expect(records.first?.metadata["free_mb"] == "0")
    #expect(records.last?.level == .warning)
    #expect(records.last?.metadata["plugin_id"] == "dev.t.logger")
    #expect(records.last?.metadata["stream"] == "stderr")
  }

  @Test func theRingBufferKeepsTheLastThousandLines() {
    let log = PluginLog(pluginID: "dev.t.ring", logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
    for i in 0..<1_500 { log.append("line \(i)", stream: "stderr") }
    let tail = log.tail()
    #expect(tail.count == PluginLog.capacity)
    #expect(tail.first == "line 500")
    #expect(tail.last == "line 1499")
    #expect(log.tail(3) == ["line 1497", "line 1498", "line 1499"])
  }

  /// Long lines are bounded by bytes, not only by count; the newest line is always kept.
  @Test func theRingBufferKeepsAtMostItsByteBudget() {
    let log = PluginLog(pluginID: "dev.t.ring", logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
    let long = String(repeating: "x", count: 60_000)
    for i in 0..<200 { log.append("\(i) " + long, stream: "stderr") }
    let tail = log.tail()
    #expect(tail.reduce(0) { $0 + $1.utf8.count } <= PluginLog.byteBudget)
    #expect(tail.count == PluginLog.byteBudget / 60_004)
    #expect(tail.last?.hasPrefix("199 ") == true)
    let huge = String(repeating: "y", count: PluginLog.byteBudget + 1)
    log.append(huge, stream: "stderr")
    #expect(log.tail() == [huge])
    log.append("short", stream: "stderr")
    #expect(log.tail() == ["short"])
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

  /// A plugin cannot pass its lines off as another plugin's: its own `plugin_id` and
  /// `stream` fields are kept under `hclog.` and never replace the supervisor's keys.
  @Test func aPluginsFieldsNeverReplaceTheSupervisorsKeys() {
    let line = #"{"@level":"info","@message":"hi","plugin_id":"dev.other.plugin","stream":"stdout","n":1}"#
    let (_, message, metadata) = PluginLog.interpret(line)
    #expect(message == "hi")
    #expect(metadata["plugin_id"] == nil && metadata["stream"] == nil)
    #expect(metadata["hclog.plugin_id"] == "dev.other.plugin")
    #expect(metadata["hclog.stream"] == "stdout")
    #expect(metadata["n"] == "1")
  }
}
