import JankControl
import NIOCore
import NIOPosix

/// Reads a plugin's stdout or stderr pipe line by line on an event loop. Over-long lines
/// are cut (a flooding plugin cannot exhaust memory), and the pipe is always drained so
/// the plugin never blocks on a full pipe.
enum OutputReader {
  static let maximumLineLength = 64 * 1024

  /// Calls `onLine` for each line and `onEnd` once at EOF. Takes ownership of `fd`.
  static func start(
    fd: Int32,
    onLine: @escaping @Sendable (String) -> Void,
    onEnd: @escaping @Sendable () -> Void
  ) async throws {
    _ = try await NIOPipeBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .channelOption(.allowRemoteHalfClosure, value: true)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFrameDecoder(maximumLength: maximumLineLength)))
          try channel.pipeline.syncOperations.addHandler(LineHandler(onLine: onLine, onEnd: onEnd))
        }
      }
      .takingOwnershipOfDescriptor(input: fd)
      .get()
  }

  private final class LineHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = LineFrame
    let onLine: @Sendable (String) -> Void
    let onEnd: @Sendable () -> Void

    init(onLine: @escaping @Sendable (String) -> Void, onEnd: @escaping @Sendable () -> Void) {
      self.onLine = onLine
      self.onEnd = onEnd
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      switch unwrapInboundIn(data) {
      case .line(let buffer): onLine(String(decoding: buffer.readableBytesView, as: UTF8.self))
      case .tooLong: onLine("[jank: line longer than \(OutputReader.maximumLineLength) bytes dropped]")
      }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
      if case ChannelEvent.inputClosed = event {
        context.close(promise: nil)
      }
      context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
      onEnd()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
      context.close(promise: nil)
    }
  }
}
