import GRPCCore
import JankProtocol
import SwiftProtobuf

/// `plugin.PluginService`: unpacks args, calls the author's plugin, packs data.
struct PluginServiceAdapter<P: Plugin>: Plugin_PluginService.SimpleServiceProtocol {
  let plugin: P

  func execute(request: Plugin_ExecuteRequest, context: ServerContext) async throws -> Plugin_ExecuteResponse {
    let args: [String: JSONValue]
    do {
      args = try AnyMap.unpack(request.args)
    } catch {
      throw RPCError(code: .invalidArgument, message: "\(error)")
    }
    let data: [String: JSONValue]
    do {
      // grpc-swift tells a handler about a passed deadline or a cancelled stream only through
      // this handler; turn it into task cancellation so that the plugin's code sees it.
      let running = withUnsafeCurrentTask { RunningTask($0) }
      data = try await withRPCCancellationHandler {
        try await plugin.execute(method: request.method, args: args)
      } onCancelRPC: {
        running.cancel()
      }
    } catch let error as RPCError {
      throw error
    } catch {
      // go-plugin convention: a plugin error is status Unknown with the error's text.
      throw RPCError(code: .unknown, message: String(describing: error))
    }
    var response = Plugin_ExecuteResponse()
    response.data = AnyMap.pack(data)
    return response
  }

  func healthCheck(request: Plugin_HealthCheckRequest, context: ServerContext) async throws -> Plugin_HealthCheckResponse {
    await plugin.healthCheckResponse()
  }
}

/// `grpc.health.v1.Health`: go-plugin hosts check service "plugin" before dispensing.
struct HealthService: Grpc_Health_V1_Health.SimpleServiceProtocol {
  let shutdown: ShutdownSignal

  private func status(for service: String) throws -> Grpc_Health_V1_HealthCheckResponse {
    guard service.isEmpty || service == Handshake.healthService else {
      throw RPCError(code: .notFound, message: "unknown service '\(service)': this plugin serves '\(Handshake.healthService)'")
    }
    var response = Grpc_Health_V1_HealthCheckResponse()
    response.status = shutdown.isFired ? .notServing : .serving
    return response
  }

  func check(request: Grpc_Health_V1_HealthCheckRequest, context: ServerContext) async throws -> Grpc_Health_V1_HealthCheckResponse {
    try status(for: request.service)
  }

  func watch(
    request: Grpc_Health_V1_HealthCheckRequest,
    response: RPCWriter<Grpc_Health_V1_HealthCheckResponse>,
    context: ServerContext
  ) async throws {
    try await response.write(status(for: request.service))
    await shutdown.wait()
    try await response.write(status(for: request.service))
  }
}

/// `plugin.GRPCController`: the host asks the plugin to exit.
struct ControllerService: Plugin_GRPCController.SimpleServiceProtocol {
  let shutdown: ShutdownSignal

  func shutdown(request: Plugin_Empty, context: ServerContext) async throws -> Plugin_Empty {
    // Fire after this handler returns, so the host gets its answer before the server drains.
    let signal = shutdown
    Task { signal.fire() }
    return Plugin_Empty()
  }
}

/// `plugin.GRPCStdio`: Jank plugins keep stdout/stderr on their own pipes (the host reads
/// stderr as the log), so the stream stays open and carries nothing until shutdown.
struct StdioService: Plugin_GRPCStdio.SimpleServiceProtocol {
  let shutdown: ShutdownSignal

  func streamStdio(
    request: Google_Protobuf_Empty,
    response: RPCWriter<Plugin_StdioData>,
    context: ServerContext
  ) async throws {
    await shutdown.wait()
  }
}

/// `plugin.GRPCBroker`: Jank plugins open no extra connections; the stream is accepted
/// and drained so a go-plugin host sees a well-behaved peer.
struct BrokerService: Plugin_GRPCBroker.SimpleServiceProtocol {
  let shutdown: ShutdownSignal

  func startStream(
    request: RPCAsyncSequence<Plugin_ConnInfo, any Error>,
    response: RPCWriter<Plugin_ConnInfo>,
    context: ServerContext
  ) async throws {
    await withTaskGroup(of: Void.self) { group in
      group.addTask { _ = try? await request.reduce(0) { count, _ in count + 1 } }
      group.addTask { await self.shutdown.wait() }
      await group.next()
      group.cancelAll()
    }
  }
}

/// The running task, for a cancellation handler that must cancel it. `UnsafeCurrentTask` is
/// valid only while its task runs; `withRPCCancellationHandler` removes the handler before
/// the operation's task can finish, so `cancel` is never called on a finished task.
struct RunningTask: @unchecked Sendable {
  private let task: UnsafeCurrentTask?

  init(_ task: UnsafeCurrentTask?) { self.task = task }

  func cancel() { task?.cancel() }
}
