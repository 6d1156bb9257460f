// Swift concurrency for Queue: getAsync, putAsync, getManyAsync, putManyAsync, joinAsync and
// messages() (an AsyncSequence), the Swift versions of python/sage_queue/aio.py.
//
// Each call makes the non-waiting message call (msg_try_take, msg_try_put, ...) on the thread
// the task runs on, and while that finds nothing (or no room) awaits the native
// msg_ready_async: a UniFFI future that resolves when the queue's state moved on from the one
// read before the try (msg_line_state), and never takes or puts anything itself. Between a successful take and the return there is no
// suspension point, so cancelling a task (or a timeout) can never lose, duplicate or half-put
// a message: a cancelled wait is only a wait given up.
//
// No thread per waiter: the waits of every task of the process are served by the native
// watcher threads (one per 127 queues waited on at once), which resume the tasks through
// UniFFI's continuation callback. A task waiting costs no thread and no CPU.
//
// Cancellation. The generated `msgReadyAsync` (Generated/SageQueueFFI.swift) does not observe
// task cancellation: its uniffiRustCallAsync awaits withUnsafeContinuation with no
// cancellation handler and never calls the future's cancel function, so a cancelled task
// would stay suspended until the wait ends by itself (a message, or the timeout: never, for a
// wait without one). Its makeRustCall also stops the process (fatalError "Cancellation not
// supported yet") if it ever sees CALL_CANCELLED, so the future cannot be cancelled under it
// either. Queue therefore drives the future itself (`ready` below), with the same C functions
// (ffi_sage_queue_rust_future_poll/cancel/complete/free_i8) inside withTaskCancellationHandler:
// cancelling the task cancels the future at once (its continuation resumes, the Rust wait is
// dropped and hands its turn to the next waiter), and the call throws CancellationError.
import Foundation
import SageQueueFFIRaw

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Queue {
    // ---- taking ----

    /// Take one message, waiting up to `timeout` seconds (QueueError.Empty), forever by default,
    /// without blocking a thread. Throws QueueError.Closed when the queue is closed (detached,
    /// unlinked) while waiting, and CancellationError when the task is cancelled: a cancelled
    /// call has taken nothing (a message taken is always returned).
    public func getAsync(timeout: Double = Queue.forever) async throws -> Data {
        var wait = try Waiting(self, .data, timeout)
        while true {
            try Task.checkCancellation()
            try wait.mark()  // the line's state before the try (msg_line_state)
            // The take and the copy out of the view buffer, with no suspension point between
            // them and the return.
            let n = uniffi_sage_queue_fn_func_msg_try_take(id, status)
            if n < Self.failed { return n == 0 ? Data() : Data(bytes: View.address(n, status), count: Int(n)) }
            if n != Self.nothing { throw Self.failure() }
            if try await !wait.next() { throw QueueError.Empty }
        }
    }

    /// Wait up to `timeout` seconds for one message (QueueError.Empty), then take up to
    /// `maxItems` messages whose sizes total at most `maxBytes` (always at least one).
    public func getManyAsync(
        maxItems: Int, maxBytes: UInt64 = .max, timeout: Double = Queue.forever
    ) async throws -> [Data] {
        var wait = try Waiting(self, .data, timeout)
        let items = UInt32(clamping: max(maxItems, 0))
        while true {
            try Task.checkCancellation()
            try wait.mark()  // the line's state before the try (msg_line_state)
            let n = uniffi_sage_queue_fn_func_msg_take_batch(id, items, maxBytes, 0, status)
            if n < Self.failed {
                return try Self.messages(UnsafeRawBufferPointer(start: View.address(n, status), count: Int(n)))
            }
            if n != Self.nothing { throw Self.failure() }
            if try await !wait.next() { throw QueueError.Empty }
        }
    }

    // ---- putting ----

    /// Put one message, waiting up to `timeout` seconds for room (QueueError.Full), forever by
    /// default, without blocking a thread. A cancelled call (CancellationError) has put nothing.
    public func putAsync(_ data: Data, timeout: Double = Queue.forever) async throws {
        var wait = try Waiting(self, .space, timeout)
        while true {
            try Task.checkCancellation()
            try wait.mark()  // the line's state before the try (msg_line_state)
            if try data.withUnsafeBytes({ try tryPut(Self.none, $0) }) { return }
            if try await !wait.next() { throw QueueError.Full }
        }
    }

    /// Put one message given as bytes (see `putAsync(_: Data)`).
    public func putAsync(_ bytes: [UInt8], timeout: Double = Queue.forever) async throws {
        var wait = try Waiting(self, .space, timeout)
        while true {
            try Task.checkCancellation()
            try wait.mark()  // the line's state before the try (msg_line_state)
            if try bytes.withUnsafeBytes({ try tryPut(Self.none, $0) }) { return }
            if try await !wait.next() { throw QueueError.Full }
        }
    }

    /// Put `messages` in order, as many per try as there is room for (whole messages), and
    /// return how many were put: all of them, or, when the timeout ends part way, the first ones
    /// (QueueError.Full only when none was), as `putMany`. A cancelled call (CancellationError)
    /// may have put some first messages, never part of one.
    @discardableResult
    public func putManyAsync(_ messages: [Data], timeout: Double = Queue.forever) async throws -> Int {
        var wait = try Waiting(self, .space, timeout)
        if messages.isEmpty { return 0 }
        let table = try Table(messages)
        var done = 0
        while true {
            try Task.checkCancellation()
            try wait.mark()  // the line's state before the try (msg_line_state)
            let n = table.put(from: done, id, status)
            if n < 0 { throw Self.failure() }
            done += Int(n)
            if done == messages.count { return done }
            if try await !wait.next() {
                if done > 0 { return done }
                throw QueueError.Full
            }
        }
    }

    // ---- tasks ----

    /// Wait until every message put has been marked done (`taskDone`); false when the timeout
    /// ends first (as `join`).
    public func joinAsync(timeout: Double = Queue.forever) async throws -> Bool {
        var wait = try Waiting(self, .tasks, timeout)
        while true {
            try Task.checkCancellation()
            try wait.mark()  // the line's state before the try (msg_line_state)
            if try handle.join(timeout: 0) { return true }
            if try await !wait.next() { return false }
        }
    }

    // ---- iteration ----

    /// The messages as they come, as an AsyncSequence: `for try await m in q.messages() { }`.
    /// The sequence ends when the queue is closed (this handle detached, or the queue unlinked
    /// by anyone); each message waits up to `timeout` seconds (QueueError.Empty), forever by
    /// default. A cancelled task's iteration throws CancellationError.
    public func messages(timeout: Double = Queue.forever) -> Messages {
        Messages(queue: self, timeout: timeout)
    }

    /// The AsyncSequence of `messages()`.
    public struct Messages: AsyncSequence, Sendable {
        public typealias Element = Data
        let queue: Queue
        let timeout: Double

        public func makeAsyncIterator() -> Iterator { Iterator(queue: queue, timeout: timeout) }

        public struct Iterator: AsyncIteratorProtocol {
            let queue: Queue
            let timeout: Double

            public mutating func next() async throws -> Data? {
                do {
                    return try await queue.getAsync(timeout: timeout)
                } catch QueueError.Closed {
                    return nil
                }
            }
        }
    }

    // ---- waiting ----

    /// What an async call waits for: msg_ready_async's line.
    enum Line: UInt8 {
        case data = 0, space = 1, tasks = 2
    }

    /// Wait, without a thread, until the queue may allow progress on `line` (or is closed):
    /// true; false when the deadline passed. Takes and puts nothing. CancellationError when the
    /// task is cancelled (at once: the native wait is cancelled by the task's cancellation).
    func ready(_ line: Line, _ seen: UInt64, _ deadline: Deadline) async throws -> Bool {
        let left = deadline.left
        if left == 0 { return false }
        let future = uniffi_sage_queue_fn_func_msg_ready_async(id, line.rawValue, seen, left)
        waiters.add(future)
        await withTaskCancellationHandler {
            while await Self.poll(future) != 0 {} // 0: ready (or cancelled); 1: polled again
        } onCancel: {
            ffi_sage_queue_rust_future_cancel_i8(future)
        }
        // The cancellation handler is gone once withTaskCancellationHandler returns, and
        // detach cancels only registered futures: after this, nobody touches the future.
        waiters.remove(future)
        var st = RustCallStatus()
        let r = ffi_sage_queue_rust_future_complete_i8(future, &st)
        ffi_sage_queue_rust_future_free_i8(future)
        switch st.code {
        case 0: return r != 0
        case 1: throw try FfiConverterTypeQueueError_lift(st.errorBuf)
        case 3:
            // Cancelled: by the task, or by this Queue's detach (the caller's next try then
            // throws Closed).
            if Task.isCancelled { throw CancellationError() }
            return true
        default:
            throw QueueError.Io(reason: "msg_ready_async failed: \(Self.panicMessage(st.errorBuf))")
        }
    }

    /// One poll of a Rust future: the value its continuation callback is called with.
    @inline(__always)
    private static func poll(_ future: UInt64) async -> Int8 {
        await withUnsafeContinuation { (c: UnsafeContinuation<Int8, Never>) in
            let box = UnsafeMutablePointer<UnsafeContinuation<Int8, Never>>.allocate(capacity: 1)
            box.initialize(to: c)
            // Called once per poll, at once if the future is ready, else from the thread that
            // wakes it (a watcher thread), or by cancel.
            ffi_sage_queue_rust_future_poll_i8(future, { data, result in
                let box = UnsafeMutablePointer<UnsafeContinuation<Int8, Never>>(bitPattern: UInt(data))!
                let c = box.move()
                box.deallocate()
                c.resume(returning: result)
            }, UInt64(UInt(bitPattern: box)))
        }
    }

    /// The text of a panic's error buffer (freed here).
    private static func panicMessage(_ buf: RustBuffer) -> String {
        guard buf.len > 0, let data = buf.data else { return "a panic in sage-queue" }
        let text = String(decoding: UnsafeBufferPointer(start: data, count: Int(buf.len)), as: UTF8.self)
        var st = RustCallStatus()
        ffi_sage_queue_rustbuffer_free(buf, &st)
        return text
    }

    /// msg_try_put of `head` + `body`: true if put, false if there was no room.
    func tryPut(_ head: UnsafeRawBufferPointer, _ body: UnsafeRawBufferPointer) throws -> Bool {
        if head.count > Int(Int32.max) || body.count > Int(Int32.max) {
            return try put(head, body, 0)
        }
        let r = uniffi_sage_queue_fn_func_msg_try_put(id, Self.foreign(head), Self.foreign(body), status)
        if r > 0 { return true }
        if r == 0 { return false }
        throw Self.failure()
    }
}

/// One async call's waiting: its line, its deadline, and the line's state read before each
/// try. msg_ready_async resolves when that state moved on (a message committed, room
/// returned, a task done), so a try that fails for a reason the state does not show (a
/// message behind another handle's open loan, room behind a pinned view) waits for the next
/// change instead of retrying in a loop.
struct Waiting {
    let queue: Queue
    let line: Queue.Line
    let deadline: Deadline
    /// The line's state read before the last try (msg_line_state).
    private var seen: UInt64 = 0

    init(_ queue: Queue, _ line: Queue.Line, _ timeout: Double) throws {
        self.queue = queue
        self.line = line
        deadline = try Deadline(timeout)
    }

    /// Before a try: read the line's state, which the wait after a failed try starts from (a
    /// change between the try and the wait is then never missed).
    mutating func mark() throws {
        let s = uniffi_sage_queue_fn_func_msg_line_state(queue.id, line.rawValue, queue.status)
        if s == Queue.failed { throw Queue.failure() }
        seen = s
    }

    /// After a try that found nothing: wait until the line's state moved on from the one read
    /// before the try (true), or the deadline passed (false).
    mutating func next() async throws -> Bool {
        try await queue.ready(line, seen, deadline)
    }
}

/// When an async call must end: seconds as everywhere (negative or +infinity: never; 0: try
/// once; NaN: InvalidArgument, as the core says it).
struct Deadline {
    /// CLOCK_MONOTONIC nanoseconds, or nil for never.
    let end: UInt64?

    init(_ timeout: Double) throws {
        if timeout.isNaN {
            throw QueueError.InvalidArgument(reason: "timeout must be a number of seconds, not NaN")
        }
        if timeout < 0 || timeout == .infinity {
            end = nil
        } else {
            end = Deadline.now() &+ UInt64(min(timeout, 1e9) * 1e9)
        }
    }

    /// The seconds left: -1 for never, 0 when the deadline passed.
    var left: Double {
        guard let end else { return Queue.forever }
        let now = Deadline.now()
        return now >= end ? 0 : Double(end - now) / 1e9
    }

    static func now() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }
}

/// The native waits of one Queue's async calls, so that detach can wake them at once.
final class Waiters: @unchecked Sendable {
    private let lock = NSLock()
    private var futures = Set<UInt64>()
    private var closed = false

    func add(_ future: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        if closed {
            ffi_sage_queue_rust_future_cancel_i8(future)
        } else {
            futures.insert(future)
        }
    }

    func remove(_ future: UInt64) {
        lock.lock()
        futures.remove(future)
        lock.unlock()
    }

    /// The handle was detached: cancel every wait, now and later.
    func close() {
        lock.lock()
        defer { lock.unlock() }
        closed = true
        for f in futures { ffi_sage_queue_rust_future_cancel_i8(f) }
        futures.removeAll()
    }
}
