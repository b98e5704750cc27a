public import JankControl

extension Supervisor {
  /// The control methods this supervisor serves.
  public nonisolated func makeRouter() -> ControlRouter {
    var router = ControlRouter()
    router.peerRefusal = { [cgroups, principals] pid, uid in
      if principals.isPluginUID(uid) {
        return "permission denied: uid \(uid) is a plugin's, and plugins may not use the supervisor's control channel"
      }
      guard cgroups.holdsPlugin(pid) == true else { return nil }
      return "permission denied: process \(pid) runs in a plugin's cgroup, and plugins may not use the supervisor's control channel"
    }
    router.register(ControlMethods.list) { await self.list(status: $0.status) }
    router.register(ControlMethods.get) { try await self.get(id: $0.id) }
    router.register(ControlMethods.register) { try await self.register(id: $0.id, rebuild: $0.rebuild ?? false) }
    router.register(ControlMethods.unregister) { try await self.unregister(id: $0.id) }
    router.register(ControlMethods.start) { try await self.start(id: $0.id) }
    router.register(ControlMethods.stop) { try await self.stop(id: $0.id) }
    router.register(ControlMethods.execute) { try await self.execute(id: $0.id, method: $0.method, args: $0.args ?? [:], timeoutMs: $0.timeoutMs) }
    router.register(ControlMethods.restart) { try await self.restart(id: $0.id) }
    router.register(ControlMethods.build) { try await self.build(id: $0.id) }
    router.register(ControlMethods.logs) { try await self.logs($0) }
    router.register(ControlMethods.status) { _ in await self.status() }
    router.register(ControlMethods.metrics) { _ in MetricsResult(text: await self.metricsText()) }
    return router
  }
}
