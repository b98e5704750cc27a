import NIOCore
import NIOHTTPTypes

/// Closes a connection whose request stops arriving: from its head to its end, no more than
/// `timeout` may pass without a byte of it. Hummingbird's idle timeout covers a connection
/// between requests (and a head that never completes); a body trickled a byte a minute
/// would otherwise hold a connection, and a slot of the connection limit, forever.
final class RequestReadTimeoutHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = HTTPRequestPart
  typealias InboundOut = HTTPRequestPart

  private let timeout: TimeAmount
  private var check: Scheduled<Void>?
  private var lastRead = NIODeadline.now()
  private var reading = false

  init(timeout: TimeAmount) {
    self.timeout = timeout
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .head:
      reading = true
      lastRead = .now()
      if check == nil { schedule(context, at: lastRead + timeout) }
    case .body:
      lastRead = .now()  // the scheduled check moves itself on; no timer per chunk
    case .end:
      reading = false
      check?.cancel()
      check = nil
    }
    context.fireChannelRead(data)
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    check?.cancel()
    check = nil
  }

  func channelInactive(context: ChannelHandlerContext) {
    check?.cancel()
    check = nil
    context.fireChannelInactive()
  }

  private func schedule(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
    let loop = context.eventLoop.assumeIsolated()
    check = loop.scheduleTask(deadline: deadline) { [self] in
      check = nil
      guard reading else { return }
      let due = lastRead + timeout
      if due > .now() {
        schedule(context, at: due)
      } else {
        // The handler above is mid-request: there is no clean answer to give, only the close.
        context.close(promise: nil)
      }
    }
  }
}
