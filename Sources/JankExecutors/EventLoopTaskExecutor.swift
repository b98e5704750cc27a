public import NIOCore

/// Runs tasks on one NIO event loop. Given as a task executor preference, it keeps a
/// connection's handlers on the thread that reads and writes its socket: no hop to the
/// concurrency pool and back per call.
public final class EventLoopTaskExecutor: TaskExecutor {
  public let eventLoop: any EventLoop

  public init(_ eventLoop: any EventLoop) {
    self.eventLoop = eventLoop
  }

  public func enqueue(_ job: consuming ExecutorJob) {
    let job = UnownedJob(job)
    eventLoop.execute {
      job.runSynchronously(on: self.asUnownedTaskExecutor())
    }
  }
}
