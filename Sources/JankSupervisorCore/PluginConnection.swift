import GRPCCore
import GRPCNIOTransportHTTP2
import JankControl
import JankJSON
import JankProtocol
import GRPCProtobuf
import Synchronization
import SwiftProtobuf

/// The supervisor's side of one plugin process. gRPC is one implementation; a negotiated
/// framed transport can be another behind the same protocol.
protocol PluginConnection: Sendable {
  var transportName: String { get }
  /// Fails with a ControlError: `.pluginError` (the plugin's own error), `.timeout`, `.unavailable`;
  /// or with `UndeliveredCall` when the request provably never reached the plugin.
  /// Runs on the caller's executor (`nonsending`): the runner actor does not hop off and back.
  nonisolated(nonsending) func execute(method: String, args: [String: JSONValue], timeout: Duration) async throws -> [String: JSONValue]
  /// `true` when the plugin answers "healthy" in time.
  func healthCheck(timeout: Duration) async -> Bool
  /// Periodic health checks until cancelled, or until `failures` misses in a row (then
  /// `onFailure` gets the count). See HealthWatch.swift for the default.
  func watchHealth(policy: PluginManifest.HealthPolicy, onFailure: @escaping @Sendable (Int) -> Void) -> HealthWatch
  /// Asks the plugin to exit; returns once it acknowledged or gave up within `timeout`.
  func shutdown(timeout: Duration) async
  func close()
}

/// A call that failed before its request was handed to a stream to the plugin (connection
/// refused, plugin gone): the plugin cannot have seen it, so it is safe to send once more.
struct UndeliveredCall: Error {
  var error: ControlError
}

/// go-plugin over gRPC on a Unix socket (or loopback TCP).
final class GRPCPluginConnection: PluginConnection {
  let transportName = "grpc"
  private let client: GRPCClient<HTTP2ClientTransport.Posix>
  private let runner: Task<Void, Never>
  private let streams: Task<Void, Never>

  /// Connects and confirms the plugin serves: `grpc.health.v1` must report `plugin` as
  /// SERVING before `deadline`.
  static func connect(handshake: HandshakeLine, deadline: ContinuousClock.Instant) async throws -> GRPCPluginConnection {
    let target: any ResolvableTarget =
      handshake.network == "unix"
      ? .unixDomainSocket(path: handshake.address)
      : .dns(host: String(handshake.address.split(separator: ":").dropLast().joined(separator: ":")), port: Int(handshake.address.split(separator: ":").last ?? "") ?? 0)
    let transport = try HTTP2ClientTransport.Posix(target: target, transportSecurity: .plaintext)
    let client = GRPCClient(transport: transport)
    let runner = Task { _ = try? await client.runConnections() }
    let health = Grpc_Health_V1_Health.Client(wrapping: client)
    // At least one check, even when the handshake used up the start timeout: a plugin is
    // never ready without a SERVING answer.
    var lastError: (any Error)? = ControlError(.timeout, "the start timeout passed before its health could be checked")
    repeat {
      do {
        var options = CallOptions.defaults
        // Never zero or negative (a handshake that came late used up the start timeout):
        // the one check gets 100 ms, as over jank-frame.
        options.timeout = max(min(.seconds(5), deadline - .now), .milliseconds(100))
        var request = Grpc_Health_V1_HealthCheckRequest()
        request.service = Handshake.healthService
        options.waitForReady = true
        let response = try await health.check(request, options: options)
        if response.status == .serving {
          lastError = nil
          break
        }
        lastError = ControlError(.unavailable, "health service reports \(response.status) for '\(Handshake.healthService)'")
      } catch {
        lastError = error
      }
      // A cancelled start (the plugin stopped meanwhile) stops asking at once.
      if Task.isCancelled {
        lastError = CancellationError()
        break
      }
      try? await Task.sleep(for: .milliseconds(20))
    } while ContinuousClock.now < deadline
    if let lastError {
      client.beginGracefulShutdown()
      runner.cancel()
      throw ControlError(.unavailable, "plugin did not report healthy over gRPC at \(handshake.address): \(Self.describe(lastError))")
    }
    let streams = Task { await Self.holdGoPluginStreams(client) }
    return GRPCPluginConnection(client: client, runner: runner, streams: streams)
  }

  private init(client: GRPCClient<HTTP2ClientTransport.Posix>, runner: Task<Void, Never>, streams: Task<Void, Never>) {
    self.client = client
    self.runner = runner
    self.streams = streams
  }

  /// go-plugin hosts open the stdio and broker streams; Unimplemented (go-plugin 1.0.x) is fine.
  private static func holdGoPluginStreams(_ client: GRPCClient<HTTP2ClientTransport.Posix>) async {
    await withTaskGroup(of: Void.self) { group in
      group.addTask {
        _ = try? await Plugin_GRPCStdio.Client(wrapping: client).streamStdio(Google_Protobuf_Empty()) { response in
          for try await _ in response.messages {}
        }
      }
      group.addTask {
        _ = try? await Plugin_GRPCBroker.Client(wrapping: client).startStream(
          requestProducer: { _ in
            try await Task.sleep(for: .seconds(365 * 24 * 3600))
          },
          onResponse: { response in
            for try await _ in response.messages {}
          })
      }
    }
  }

  nonisolated(nonsending) func execute(method: String, args: [String: JSONValue], timeout: Duration) async throws -> [String: JSONValue] {
    var request = Plugin_ExecuteRequest()
    request.method = method
    request.args = AnyMap.pack(args)
    var options = CallOptions.defaults
    options.timeout = timeout
    let delivery = DeliveryTrackingSerializer<Plugin_ExecuteRequest>()
    let deadline = ContinuousClock.now + timeout
    do {
      let response = try await Plugin_PluginService.Client(wrapping: client).execute(
        request: ClientRequest(message: request), serializer: delivery,
        deserializer: ProtobufDeserializer<Plugin_ExecuteResponse>(), options: options
      ) { try $0.message }
      do {
        return try AnyMap.unpack(response.data)
      } catch {
        throw ControlError(.pluginError, "the plugin answered with data that is not JSON: \(error)")
      }
    } catch let error as RPCError {
      // The plugin's own copy of the deadline may end the call (a cancelled stream) an
      // instant before ours does: at or past the deadline, any failure is the timeout.
      if ContinuousClock.now >= deadline, error.code != .deadlineExceeded {
        throw Self.controlError(RPCError(code: .deadlineExceeded, message: error.message), timeout: timeout)
      }
      let mapped = Self.controlError(error, timeout: timeout)
      if mapped.kind == .unavailable, !delivery.wasUsed { throw UndeliveredCall(error: mapped) }
      throw mapped
    } catch let error as RuntimeError where error.code == .clientIsStopped {
      // The process died and its connection was closed under the call. If the request was
      // never serialized it never left and may go to the replacement; otherwise the plugin
      // may have run it, and it fails like any call a crash interrupts.
      let failure = ControlError(.unavailable, "the connection to the plugin was closed: \(error.message)")
      if !delivery.wasUsed { throw UndeliveredCall(error: failure) }
      throw failure
    }
  }

  /// Both views of health must agree: the plugin's own `HealthCheck` and go-plugin's
  /// `grpc.health.v1` status for `plugin` (what a go-plugin host pings).
  func healthCheck(timeout: Duration) async -> Bool {
    var options = CallOptions.defaults
    options.timeout = timeout
    var request = Grpc_Health_V1_HealthCheckRequest()
    request.service = Handshake.healthService
    async let grpcHealth = try? await Grpc_Health_V1_Health.Client(wrapping: client).check(request, options: options)
    let response = try? await Plugin_PluginService.Client(wrapping: client).healthCheck(Plugin_HealthCheckRequest(), options: options)
    return await grpcHealth?.status == .serving && response?.status == "healthy"
  }

  func shutdown(timeout: Duration) async {
    var options = CallOptions.defaults
    options.timeout = timeout
    // Unavailable is success: go-plugin 1.0.x closes the transport before answering.
    _ = try? await Plugin_GRPCController.Client(wrapping: client).shutdown(Plugin_Empty(), options: options)
  }

  func close() {
    streams.cancel()
    client.beginGracefulShutdown()
    runner.cancel()
  }

  static func controlError(_ error: RPCError, timeout: Duration) -> ControlError {
    switch error.code {
    case .deadlineExceeded:
      return ControlError(.timeout, "the plugin did not answer within \(timeout.readable); raise timeout_ms or make the method faster")
    case .unavailable, .cancelled:
      return ControlError(.unavailable, "the connection to the plugin failed: \(error.message)")
    case .resourceExhausted:
      return ControlError(.tooLarge, "the call is too large for the plugin: \(error.message)")
    case .invalidArgument:
      return ControlError(.invalid, error.message)
    default:
      return ControlError(.pluginError, error.message)
    }
  }

  private static func describe(_ error: any Error) -> String {
    if let error = error as? RPCError { return "\(error.code): \(error.message)" }
    return "\(error)"
  }
}

/// grpc-swift serializes a request only once a stream to the peer is open; a call whose
/// request was never serialized was never sent. This is how `UndeliveredCall` is told apart
/// from a call the plugin may have started (which must never be resent).
struct DeliveryTrackingSerializer<Message: SwiftProtobuf.Message>: MessageSerializer {
  private final class Flag: Sendable {
    let used = Atomic(false)
  }

  private let flag = Flag()
  private let serializer = ProtobufSerializer<Message>()

  var wasUsed: Bool { flag.used.load(ordering: .acquiring) }

  func serialize<Bytes: GRPCContiguousBytes>(_ message: Message) throws -> Bytes {
    flag.used.store(true, ordering: .releasing)
    return try serializer.serialize(message)
  }
}
