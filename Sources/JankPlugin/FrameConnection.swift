import CJankShim
import Glibc
import JankFrame
import NIOCore
import Synchronization

/// One jank-frame connection, served by a thread of its own that is also the task executor
/// its calls run on: the thread reads the socket, runs the calls' jobs, writes their answers
/// and fires their deadlines, with no event loop, pipeline or async-sequence machinery in
/// between (that was most of a plugin's CPU time per call, BENCHMARKS.md).
///
/// The thread sleeps in `poll` on the socket and an eventfd that other threads write to when
/// they enqueue a job; when the host's next request is microseconds away it polls without
/// sleeping for a moment instead (`AdaptiveSpin`). It ends once `finish()` is called and its
/// jobs are done, and then closes the socket.
final class FrameConnection: TaskExecutor, @unchecked Sendable {
  private let fd: CInt
  private let wakeFD: CInt

  /// What other threads touch: under `shared`'s lock.
  private struct Shared {
    var jobs: [UnownedJob] = []
    var sleeping = false
    var finished = false
    var exited = false
    var output = ByteBuffer()
    var outputFailed = false
    /// Requests handed out and not answered yet, for the spin's "nothing else in flight".
    var outstanding = 0
    var answeredAt: UInt64 = 0
    var timers: [(deadline: UInt64, token: UInt64, callID: UInt64)] = []
    /// A timer was added since the thread computed how long it may sleep.
    var timersChanged = false
    var nextToken: UInt64 = 1
  }
  private let shared = Mutex(Shared())

  // The thread's own state.
  private var input = ByteBuffer()
  private var decoder: FrameDecoder
  private var reader: UnsafeContinuation<InboundFrame?, Never>?
  private var closed = false
  /// False once a read drained the socket, until poll or the spin sees it readable again:
  /// saves a read that would only say EAGAIN before each wait.
  private var mayBeReadable = true
  private var spin: AdaptiveSpin?
  private var spunForThisWait = false
  /// The connection's thread, set when it starts (for an assertion).
  private var thread = pthread_t()
  private let onTimeout: @Sendable (UInt64) -> Void

  /// Takes over `fd` (closed when the connection ends) and starts the connection's thread;
  /// when it throws, `fd` is still the caller's. `onTimeout` gets a call's id when the
  /// deadline given to `scheduleTimeout` passes.
  static func start(fd: CInt, maxPayloadLength: Int, onTimeout: @escaping @Sendable (UInt64) -> Void) throws -> FrameConnection {
    let flags = fcntl(fd, F_GETFL)
    guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else {
      throw ListenError("could not make the connection non-blocking: \(String(cString: strerror(errno)))")
    }
    let wakeFD = jank_eventfd()
    guard wakeFD >= 0 else { throw ListenError("eventfd() failed: \(String(cString: strerror(errno)))") }
    let connection = FrameConnection(fd: fd, wakeFD: wakeFD, decoder: FrameDecoder(maxPayloadLength: maxPayloadLength), onTimeout: onTimeout)
    let context = Unmanaged.passRetained(connection)
    var handle = pthread_t()
    // A bare pthread, not Foundation's Thread (see FrameListener).
    let created = pthread_create(&handle, nil, { context in
      // Named for ps, top and perf (it would inherit its creator's, a pool thread's, name).
      jank_name_thread("jank-frame-conn")
      Unmanaged<FrameConnection>.fromOpaque(context!).takeRetainedValue().run()
      return nil
    }, context.toOpaque())
    guard created == 0 else {
      context.release()
      Glibc.close(wakeFD)
      throw ListenError("could not start the connection's thread: \(String(cString: strerror(created)))")
    }
    pthread_detach(handle)
    return connection
  }

  private init(fd: CInt, wakeFD: CInt, decoder: FrameDecoder, onTimeout: @escaping @Sendable (UInt64) -> Void) {
    self.fd = fd
    self.wakeFD = wakeFD
    self.decoder = decoder
    self.onTimeout = onTimeout
    spin = AdaptiveSpin.fromEnvironment()
  }

  // MARK: Task executor

  func enqueue(_ job: consuming ExecutorJob) {
    let job = UnownedJob(job)
    let (wake, exited) = shared.withLock { state -> (Bool, Bool) in
      guard !state.exited else { return (false, true) }
      state.jobs.append(job)
      defer { state.sleeping = false }
      return (state.sleeping, false)
    }
    // A job of a task that outlived the connection still runs, on the pool.
    if exited { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    if wake { signal() }
  }

  // MARK: Used by the frame server, from tasks on this executor

  /// The next frame from the host; nil once the host closed the connection or sent bytes
  /// that are not jank-frame (the connection is then shut down).
  func nextFrame() async -> InboundFrame? {
    // The reader's state is the thread's own; the frame server's tasks prefer this executor.
    assert(pthread_equal(thread, pthread_self()) != 0, "nextFrame() called off the connection's thread")
    if let frame = decodeBuffered() { return frame }
    if closed { return nil }
    return await withUnsafeContinuation { reader = $0 }
  }

  /// Queues a frame for the host and writes what the socket takes now. Every frame a plugin
  /// sends answers one request, so this also counts the request as answered.
  func send(_ frame: Frame) {
    let pending = shared.withLock { state -> Bool in
      state.outstanding = max(state.outstanding - 1, 0)
      if state.outstanding == 0 { state.answeredAt = AdaptiveSpin.now() }
      guard !state.outputFailed else { return false }
      frame.write(to: &state.output)
      flush(&state)
      return state.output.readableBytes > 0 && state.sleeping
    }
    // The thread is asleep without waiting for the socket to take the rest: wake it.
    if pending { signal() }
  }

  /// Runs `onTimeout(callID)` on this connection's thread after `milliseconds`.
  func scheduleTimeout(callID: UInt64, milliseconds: UInt32) -> UInt64 {
    let deadline = AdaptiveSpin.now() &+ UInt64(milliseconds) &* 1_000_000
    let (token, wake) = shared.withLock { state -> (UInt64, Bool) in
      let token = state.nextToken
      state.nextToken &+= 1
      state.timers.append((deadline, token, callID))
      state.timersChanged = true
      return (token, state.sleeping)
    }
    if wake { signal() }
    return token
  }

  func cancelTimeout(_ token: UInt64) {
    shared.withLock { state in state.timers.removeAll { $0.token == token } }
  }

  /// The connection's work is over: its thread ends once the jobs it has are done.
  func finish() {
    let wake = shared.withLock { state -> Bool in
      state.finished = true
      return state.sleeping
    }
    if wake { signal() }
  }

  // MARK: The thread

  private func run() {
    thread = pthread_self()
    var pollSet = [pollfd(fd: fd, events: 0, revents: 0), pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
    // Two job arrays swapped in turn, so that taking the queue allocates nothing.
    var jobs: [UnownedJob] = []
    while true {
      let finished = shared.withLock { state in
        swap(&state.jobs, &jobs)
        return state.finished
      }
      if !jobs.isEmpty {
        for job in jobs { job.runSynchronously(on: asUnownedTaskExecutor()) }
        jobs.removeAll(keepingCapacity: true)
        continue
      }
      if finished { break }
      if readForWaitingReader() { continue }
      let (timeout, outputPending) = fireDueTimers()
      if timeout == 0 { continue }
      if spinIfWorthIt(outputPending: outputPending) {
        mayBeReadable = true
        continue
      }
      // Sleep, unless another thread gave this one work since it looked.
      let (asleep, writing) = shared.withLock { state -> (Bool, Bool) in
        guard state.jobs.isEmpty, !state.finished, !state.timersChanged else { return (false, false) }
        state.sleeping = true
        return (true, state.output.readableBytes > 0)
      }
      guard asleep else { continue }
      let events = Int16(reader != nil ? POLLIN : 0) | Int16(writing ? POLLOUT : 0)
      // A hung-up socket reports POLLHUP whatever is asked: leave it out when not waiting on it.
      pollSet[0].fd = closed || events == 0 ? -1 : fd
      pollSet[0].events = events
      pollSet[0].revents = 0
      pollSet[1].revents = 0
      _ = poll(&pollSet, 2, timeout)
      if pollSet[0].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 { mayBeReadable = true }
      shared.withLock { state in
        state.sleeping = false
        if pollSet[0].revents & Int16(POLLOUT) != 0 { flush(&state) }
      }
      if pollSet[1].revents != 0 {
        jank_eventfd_drain(wakeFD)
      }
    }
    shared.withLock { state in
      state.exited = true
      state.outputFailed = true  // the descriptor is closed below and its number may be reused
    }
    // A job enqueued between the last look and `exited` still has to run.
    for job in shared.withLock({ state in state.jobs }) { job.runSynchronously(on: asUnownedTaskExecutor()) }
    Glibc.close(fd)
    Glibc.close(wakeFD)
  }

  /// When the frame server waits for a frame: reads what the socket has and hands over the
  /// next frame, or the end. Returns whether it resumed the reader.
  private func readForWaitingReader() -> Bool {
    guard let waiting = reader else { return false }
    if !closed, mayBeReadable {
      var result = 0
      var space = 0
      var failure: CInt = 0
      input.writeWithUnsafeMutableBytes(minimumWritableBytes: 64 << 10) { buffer in
        space = buffer.count
        result = Glibc.read(fd, buffer.baseAddress, buffer.count)
        failure = result < 0 ? errno : 0
        return max(result, 0)  // the bytes written into the buffer
      }
      if result == 0 || (result < 0 && failure != EAGAIN && failure != EINTR) { close() }
      // Less than asked for: the socket is empty now, and poll or the spin says when it is not.
      if result < space && failure != EINTR { mayBeReadable = false }
    }
    if let frame = decodeBuffered() {
      reader = nil
      waiting.resume(returning: frame)
      return true
    }
    guard closed else { return false }  // nothing whole yet
    reader = nil
    waiting.resume(returning: nil)
    return true
  }

  /// The next whole frame already read, counted as outstanding when it needs an answer.
  private func decodeBuffered() -> InboundFrame? {
    var frame: InboundFrame?
    do {
      frame = try decoder.next(from: &input)
    } catch {
      // Not jank-frame: the stream cannot be trusted any more.
      close()
      return nil
    }
    guard var frame else {
      input.discardReadBytes()
      return nil
    }
    let needsAnswer: Bool
    switch frame {
    case .frame(var whole):
      needsAnswer = whole.type != .cancel
      // Its own copy: a payload sharing `input`'s storage would make the next read copy all of it.
      var payload = ByteBuffer()
      payload.writeImmutableBuffer(whole.payload)
      whole.payload = payload
      frame = .frame(whole)
    case .tooLarge(let type, _, _):
      needsAnswer = type.isRequest
    }
    if input.readableBytes == 0, input.capacity > 1 << 20 { input = ByteBuffer() }  // after a big frame
    if needsAnswer {
      shared.withLock { state in
        if state.outstanding == 0, state.answeredAt != 0 {
          spin?.record(waitNanoseconds: AdaptiveSpin.now() &- state.answeredAt)
        }
        state.outstanding += 1
      }
      spunForThisWait = false
    }
    return frame
  }

  /// Fires the deadlines that passed; returns the poll timeout until the next one (-1: none;
  /// 0: one fired, look for work again) and whether output waits for the socket.
  private func fireDueTimers() -> (timeout: CInt, outputPending: Bool) {
    let now = AdaptiveSpin.now()
    let (due, next, pending) = shared.withLock { state -> ([UInt64], UInt64?, Bool) in
      state.timersChanged = false
      var due: [UInt64] = []
      var next: UInt64?
      state.timers.removeAll { timer in
        if timer.deadline <= now {
          due.append(timer.callID)
          return true
        }
        next = min(next ?? .max, timer.deadline)
        return false
      }
      return (due, next, state.output.readableBytes > 0)
    }
    for callID in due { onTimeout(callID) }
    if !due.isEmpty { return (0, pending) }
    guard let next else { return (-1, pending) }
    return (CInt(clamping: (next - now) / 1_000_000 + 1), pending)
  }

  /// Polls the socket for a moment before sleeping when the host's next request is likely
  /// microseconds away: everything answered, and recent requests followed answers closely.
  /// Returns whether the socket became readable.
  private func spinIfWorthIt(outputPending: Bool) -> Bool {
    guard reader != nil, !closed, !outputPending, !spunForThisWait, var current = spin else { return false }
    let idle = shared.withLock { state in state.outstanding == 0 && state.answeredAt != 0 && state.jobs.isEmpty }
    guard idle else { return false }
    spunForThisWait = true
    defer { spin = current }
    return current.shouldSpin() && current.spin(untilReadable: fd)
  }

  /// Writes what the socket takes now; called under the lock.
  private func flush(_ state: inout Shared) {
    while state.output.readableBytes > 0 {
      let written = state.output.withUnsafeReadableBytes { bytes in
        Glibc.send(fd, bytes.baseAddress, bytes.count, CInt(MSG_NOSIGNAL) | CInt(MSG_DONTWAIT))
      }
      if written > 0 {
        state.output.moveReaderIndex(forwardBy: written)
      } else if written < 0 && errno == EINTR {
        continue
      } else if written < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
        return  // the thread polls for POLLOUT and writes the rest
      } else {
        // The host is gone: its answers have no one to go to.
        state.outputFailed = true
        state.output.clear()
        return
      }
    }
    // Everything went out; a buffer grown for a big answer is not kept for the connection's life.
    if state.output.capacity > 1 << 20 { state.output = ByteBuffer() } else { state.output.clear() }
  }

  /// Stops reading and shuts the socket down, so that the host sees the connection end.
  private func close() {
    guard !closed else { return }
    closed = true
    shutdown(fd, CInt(SHUT_RDWR))
  }

  private func signal() {
    jank_eventfd_signal(wakeFD)
  }
}
