import CJankShim
import Foundation
import Glibc
import Synchronization

/// Watches registered plugins' source folders with inotify and reports a plugin once its
/// sources have been quiet for `debounce` after a change (an editor's save is several
/// events; a checkout is hundreds). One thread polls the inotify descriptor.
///
/// That thread owns the descriptor and is the only one to close it, when `close()` wakes it
/// through an eventfd. Closing it from another thread while the reader is between two reads
/// let the reader's next read land on whatever took the number: a plugin's stdout pipe (its
/// handshake line vanished), an HTTP client's socket, a child's output pipe.
final class SourceWatcher: Sendable {
  private struct State {
    var idsByWatch: [Int32: String] = [:]
    var watchesByID: [String: [Int32]] = [:]
    var pending: [String: ContinuousClock.Instant] = [:]
    /// The newest `watch` per id: an older walk that ends later, or one that ends after
    /// `unwatch`, is not applied.
    var newestWatch: [String: UInt64] = [:]
    var watchesStarted: UInt64 = 0
    var closed = false
    /// The reader closed both descriptors; their numbers may belong to anyone now.
    var released = false
  }

  /// Internal for tests: the reader thread closes it.
  let fd: Int32
  /// Signalled once, by `close()`; the reader closes it after the wake-up.
  private let wakeFD: Int32
  private let debounce: Duration
  private let onChange: @Sendable (String) -> Void
  private let state = Mutex(State())

  /// nil when inotify is unavailable (the supervisor then only rebuilds on request).
  init?(debounce: Duration = .milliseconds(300), onChange: @escaping @Sendable (String) -> Void) {
    fd = inotify_init1(Int32(IN_CLOEXEC) | Int32(IN_NONBLOCK))
    guard fd >= 0 else { return nil }
    wakeFD = jank_eventfd()
    guard wakeFD >= 0 else {
      Glibc.close(fd)
      return nil
    }
    self.debounce = debounce
    self.onChange = onChange
    Thread { [self] in readEvents() }.start()
    Thread { [self] in deliverQuietChanges() }.start()
  }

  /// Watches every folder of the plugin but its build output. Called again to pick up new
  /// folders: watches that stay are kept (inotify returns the same descriptor for a folder
  /// already watched), so no event is lost while the list is renewed. The walk (up to
  /// 10 000 folders) runs on `BlockingIO`, not on the caller's actor.
  func watch(id: String, directory: String) async {
    let ticket = state.withLock { state in
      state.watchesStarted += 1
      state.newestWatch[id] = state.watchesStarted
      return state.watchesStarted
    }
    let folders = await BlockingIO.run {
      PluginFolderWalk(directory: directory, ignoredFolders: BuildFingerprint.ignoredFolders).folders
    }
    // Never through a link: a watch on a link's target would report another folder's changes.
    let mask = UInt32(IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_MODIFY) | UInt32(IN_ONLYDIR) | UInt32(IN_DONT_FOLLOW)
    // Under the lock: the reader closes the descriptor under it too, once closed is set.
    state.withLock { state in
      guard !state.closed, state.newestWatch[id] == ticket else { return }
      var watches: [Int32] = []
      for folder in folders {
        let wd = inotify_add_watch(fd, folder.isEmpty ? directory : directory + "/" + folder, mask)
        if wd >= 0 { watches.append(wd) }
      }
      let stale = (state.watchesByID[id] ?? []).filter { !watches.contains($0) }
      for wd in stale {
        state.idsByWatch[wd] = nil
        inotify_rm_watch(fd, wd)
      }
      for wd in watches { state.idsByWatch[wd] = id }
      state.watchesByID[id] = watches
    }
  }

  /// Stops watching for good; both threads end.
  func close() {
    // Under the lock, as the reader closes both descriptors under it once closed is set.
    state.withLock { state in
      guard !state.closed else { return }
      state.closed = true
      jank_eventfd_signal(wakeFD)
    }
  }

  func unwatch(id: String) {
    state.withLock { state in
      let watches = state.watchesByID.removeValue(forKey: id) ?? []
      state.newestWatch[id] = nil
      for wd in watches { state.idsByWatch[wd] = nil }
      state.pending[id] = nil
      if !state.closed { for wd in watches { inotify_rm_watch(fd, wd) } }
    }
  }

  private func readEvents() {
    let size = 64 * 1024
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
    defer { buffer.deallocate() }
    var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
    while true {
      if poll(&fds, 2, -1) < 0 {
        if errno == EINTR { continue }
        break
      }
      if fds[1].revents != 0 { break }
      let n = read(fd, buffer, size)
      if n < 0, errno == EINTR || errno == EAGAIN { continue }
      if n <= 0 { break }
      var offset = 0
      let now = ContinuousClock.now
      while offset + MemoryLayout<inotify_event>.size <= n {
        let event = buffer.load(fromByteOffset: offset, as: inotify_event.self)
        var name = ""
        if event.len > 0 {
          name = String(cString: buffer.advanced(by: offset + MemoryLayout<inotify_event>.size).assumingMemoryBound(to: CChar.self))
        }
        offset += MemoryLayout<inotify_event>.size + Int(event.len)
        // Build output and editor droppings are not source changes.
        if name.hasPrefix(".") || BuildFingerprint.ignoredFolders.contains(name) { continue }
        state.withLock { state in
          if let id = state.idsByWatch[event.wd] { state.pending[id] = now }
        }
      }
    }
    // Woken by close() (or the descriptor failed): nobody else closes these two.
    state.withLock { state in
      state.closed = true
      Glibc.close(fd)
      Glibc.close(wakeFD)
      state.released = true
    }
  }

  /// True once the reader thread has closed its descriptors (after `close()`).
  var isReleased: Bool {
    state.withLock { $0.released }
  }

  private func deliverQuietChanges() {
    while !state.withLock({ $0.closed }) {
      Thread.sleep(forTimeInterval: 0.05)
      let now = ContinuousClock.now
      let due = state.withLock { state -> [String] in
        let due = state.pending.filter { now - $0.value >= debounce }.map(\.key)
        for id in due { state.pending[id] = nil }
        return due
      }
      for id in due { onChange(id) }
    }
  }
}
