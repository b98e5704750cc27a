public import Hummingbird

/// Per-request state: the request id every response and log line carries.
public struct APIRequestContext: RequestContext {
  public var coreContext: CoreRequestContextStorage
  public var requestID = ""
  /// Whether the request carried jank-api's token (open routes answer more with it).
  public var hasValidToken = false

  public init(source: Source) {
    self.coreContext = .init(source: source)
  }
}
