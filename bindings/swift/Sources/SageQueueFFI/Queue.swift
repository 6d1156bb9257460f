// Queue: the Swift face of one sage-queue handle, compiled into the module SageQueueFFI beside
// the generated bindings (Generated/SageQueueFFI.swift, written by bindings/swift/build.sh).
//
// Messages move through the UDL's message path (msg_put, msg_take, msg_put_batch,
// msg_take_batch), called as the generated C functions of SageQueueFFIRaw, with no generated
// Swift method in between: a generated method call clones the object handle through a second
// FFI call and checks a fresh call status each time. Here a call is one plain C call:
//   - the handle's id (SageQueue.msgId()) is asked once, when the Queue is made;
//   - a put passes the caller's bytes as ForeignBytes over their own memory (no copy);
//   - the message calls never write the call status (message.rs), so each Queue passes one
//     status of its own, shared by every thread, and never reads it;
//   - a take leaves the message in the calling thread's view buffer; its address is asked
//     again only when a length exceeds the capacity this thread last saw (View below);
//   - "nothing before the timeout" comes back as a value (Empty and Full are thrown here), and
//     a failure as FAILED, whose typed error the generated msgError() throws.
// Everything else (stats, taskDone, join, ...) is the generated method of `handle`.
// Async.swift adds the async calls (getAsync, ..., messages()), InPlace.swift loans and views,
// Acks.swift acknowledged gets (getAcked, ack, nack, ...).
import Foundation
import SageQueueFFIRaw

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One attachment to a named queue, for moving messages. Made by `Queue.create`, `Queue.open`
/// or `Queue.openOrCreate` (or around a generated `SageQueue` with `Queue(_:)`). The handle
/// detaches when `detach()` is called or when the last reference to it goes away. A Queue may
/// be used from any number of threads at once.
public final class Queue: @unchecked Sendable, CustomStringConvertible {
    /// A timeout that waits without limit. Timeouts are seconds; 0 tries once without waiting.
    public static let forever: Double = -1
    /// The ring size a queue gets when none is given: 1 MiB.
    public static let defaultCapacity: UInt64 = 1 << 20
    /// The file mode a queue gets when none is given: 0o600 (owner read and write).
    public static let defaultMode: UInt32 = 0o600

    /// The generated handle: the whole API of the UDL (every method of Queue that is not a
    /// message call forwards to it).
    public let handle: SageQueue
    /// This handle's id on the message path (`handle.msgId()`, asked once).
    public let id: UInt64
    /// The call status the message calls are given (and never write).
    let status: UnsafeMutablePointer<RustCallStatus>
    /// Loans and views open now (their closures running) and a detach waiting for them.
    let scopes = Scopes()
    /// The native waits (msg_ready_async futures) of this Queue's async calls, woken by detach.
    let waiters = Waiters()

    /// Wrap a generated handle (its message id is asked once, here).
    public init(_ handle: SageQueue) {
        self.handle = handle
        id = handle.msgId()
        status = .allocate(capacity: 1)
        status.initialize(to: RustCallStatus())
    }

    deinit {
        status.deallocate()
    }

    // ---- constructors with defaults ----

    /// Create a new queue (QueueError.AlreadyExists if the name is taken). `maxItems` bounds
    /// the number of messages in the queue, for every process (0: no bound; a put waits for a get).
    public static func create(
        _ name: String, capacity: UInt64 = Queue.defaultCapacity, mode: UInt32 = Queue.defaultMode,
        autoCleanup: Bool = true, maxItems: UInt64 = 0
    ) throws -> Queue {
        Queue(try SageQueue.create(
            name: name, capacity: capacity, mode: mode, autoCleanup: autoCleanup, maxItems: maxItems))
    }

    /// Attach to an existing queue (QueueError.NotFound if there is none).
    public static func open(_ name: String, autoCleanup: Bool = true) throws -> Queue {
        Queue(try SageQueue.open(name: name, autoCleanup: autoCleanup))
    }

    /// Attach to the queue, creating it first if needed (capacity, mode and maxItems apply only
    /// then; an existing queue keeps its own).
    public static func openOrCreate(
        _ name: String, capacity: UInt64 = Queue.defaultCapacity, mode: UInt32 = Queue.defaultMode,
        autoCleanup: Bool = true, maxItems: UInt64 = 0
    ) throws -> Queue {
        Queue(try SageQueue.openOrCreate(
            name: name, capacity: capacity, mode: mode, autoCleanup: autoCleanup, maxItems: maxItems))
    }

    // ---- putting ----

    /// Put one message; wait up to `timeout` seconds for room (QueueError.Full), forever by default.
    public func put(_ data: Data, timeout: Double = Queue.forever) throws {
        if try !data.withUnsafeBytes({ try put(Self.none, $0, timeout) }) { throw QueueError.Full }
    }

    /// Put one message given as bytes.
    public func put(_ bytes: [UInt8], timeout: Double = Queue.forever) throws {
        if try !bytes.withUnsafeBytes({ try put(Self.none, $0, timeout) }) { throw QueueError.Full }
    }

    /// Put one message from memory the caller owns (read during the call only).
    public func put(_ bytes: UnsafeRawBufferPointer, timeout: Double = Queue.forever) throws {
        if try !put(Self.none, bytes, timeout) { throw QueueError.Full }
    }

    /// Put one message made of `head` followed by `body`, without joining them first.
    public func put(head: Data, body: Data, timeout: Double = Queue.forever) throws {
        let done = try head.withUnsafeBytes { h in try body.withUnsafeBytes { b in try put(h, b, timeout) } }
        if !done { throw QueueError.Full }
    }

    /// Put one message; false if no room came within `timeout` seconds (0: only look).
    public func offer(_ data: Data, timeout: Double = 0) throws -> Bool {
        try data.withUnsafeBytes { try put(Self.none, $0, timeout) }
    }

    /// Put `messages` in order with one call; returns how many were put. When the timeout ends
    /// part way the first ones stay put and the count says how many (QueueError.Full only when
    /// none was). A batch passes at most 2 GiB - 1 of payloads (InvalidArgument beyond).
    @discardableResult
    public func putMany(_ messages: [Data], timeout: Double = Queue.forever) throws -> Int {
        if messages.isEmpty { return 0 }
        let n = try Table(messages).put(from: 0, id, status, timeout: timeout)
        if n > 0 { return Int(n) }
        if n == 0 { throw QueueError.Full }
        throw Self.failure()
    }

    // ---- taking ----

    /// Take one message; wait up to `timeout` seconds for it (QueueError.Empty), forever by default.
    public func get(timeout: Double = Queue.forever) throws -> Data {
        let n = uniffi_sage_queue_fn_func_msg_take(id, timeout, status)
        if n >= Self.failed { throw n == Self.nothing ? QueueError.Empty : Self.failure() }
        return n == 0 ? Data() : Data(bytes: View.address(n, status), count: Int(n))
    }

    /// Take one message, or nil if none came within `timeout` seconds (0: only look).
    public func getOrNil(timeout: Double = 0) throws -> Data? {
        let n = uniffi_sage_queue_fn_func_msg_take(id, timeout, status)
        if n >= Self.failed {
            if n == Self.nothing { return nil }
            throw Self.failure()
        }
        return n == 0 ? Data() : Data(bytes: View.address(n, status), count: Int(n))
    }

    /// Take one message and hand it to `body` where it lies (the calling thread's view buffer),
    /// without copying it; nil if none came within `timeout` seconds. The bytes are valid only
    /// inside `body`, which must not take from any queue on this thread.
    public func withNext<R>(
        timeout: Double = Queue.forever, _ body: (UnsafeRawBufferPointer) throws -> R
    ) throws -> R? {
        let n = uniffi_sage_queue_fn_func_msg_take(id, timeout, status)
        if n >= Self.failed {
            if n == Self.nothing { return nil }
            throw Self.failure()
        }
        if n == 0 { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return try body(UnsafeRawBufferPointer(start: View.address(n, status), count: Int(n)))
    }

    /// Wait up to `timeout` seconds for one message (QueueError.Empty), then take up to
    /// `maxItems` messages whose sizes total at most `maxBytes` (always at least one), with one call.
    public func getMany(
        maxItems: Int, maxBytes: UInt64 = .max, timeout: Double = Queue.forever
    ) throws -> [Data] {
        // maxItems below 1 is the core's InvalidArgument.
        let items = UInt32(clamping: max(maxItems, 0))
        let n = uniffi_sage_queue_fn_func_msg_take_batch(id, items, maxBytes, timeout, status)
        if n >= Self.failed { throw n == Self.nothing ? QueueError.Empty : Self.failure() }
        return try Self.messages(UnsafeRawBufferPointer(start: View.address(n, status), count: Int(n)))
    }

    // ---- the rest of the handle (the generated methods) ----

    public func qsize() -> UInt64 { handle.qsize() }
    public func isEmpty() -> Bool { handle.isEmpty() }
    /// No room for an empty message, or maxItems messages in the queue.
    public func isFull() -> Bool { handle.isFull() }
    /// The queue's bound on the number of messages (0: none), fixed at creation.
    public func maxItems() -> UInt64 { handle.maxItems() }
    public func capacity() -> UInt64 { handle.capacity() }
    /// The largest message this queue accepts.
    public func maxMessageSize() -> UInt64 { handle.maxMessageSize() }
    public func name() -> String { handle.name() }
    public func path() -> String { handle.path() }
    /// Whether this handle created the queue.
    public func created() -> Bool { handle.created() }
    public func isClosed() -> Bool { handle.isClosed() }
    /// The microseconds a blocking call keeps checking before it sleeps (default 70; 0 sleeps at once).
    public func spinMicros() -> UInt32 { handle.spinMicros() }
    public func setSpinMicros(_ micros: UInt32) { handle.setSpinMicros(micros: micros) }
    public func stats() throws -> QueueStats { try handle.stats() }
    public func resetStats() throws { try handle.resetStats() }
    /// Mark `count` fetched messages as processed (queue.Queue.task_done).
    public func taskDone(count: UInt64 = 1) throws { try handle.taskDone(count: count) }
    /// Wait until every message put has been marked done; false on timeout.
    public func join(timeout: Double = Queue.forever) throws -> Bool { try handle.join(timeout: timeout) }
    /// Detach this handle (idempotent); later calls raise QueueError.Closed. While a `loan` or
    /// `view` closure of this Queue runs (on any thread), the detach waits for it: it happens
    /// when the last such closure returns, and new loans and views throw Closed meanwhile (so
    /// a closure never writes to room given back, or reads a message released, under it).
    /// Async calls waiting on this handle are woken at once and throw Closed.
    public func detach() {
        if scopes.detachLater() { return }
        handle.detach()
        waiters.close()
    }

    /// The end of a loan or view: the handle detaches now if a detach waited for it.
    func leaveScope() {
        if scopes.leave() {
            handle.detach()
            waiters.close()
        }
    }
    /// Remove the segment now, mark the queue closed for every attacher, and close this handle
    /// (at once: unlike `detach`, without waiting for this Queue's open loans and views, whose
    /// room no one can reuse on a closed queue). Async calls waiting anywhere throw Closed.
    public func unlink() throws {
        defer { waiters.close() }
        try handle.unlink()
    }

    public var description: String { "Queue(\(handle.name()), id \(id))" }

    // ---- the message path ----

    /// msg_take's values: nothing came before the timeout; the call failed.
    static var nothing: UInt64 { .max }
    static var failed: UInt64 { .max - 1 }
    static var none: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: nil, count: 0) }

    /// msg_put of `head` + `body`: true if put, false if no room came before the timeout.
    func put(_ head: UnsafeRawBufferPointer, _ body: UnsafeRawBufferPointer, _ timeout: Double) throws -> Bool {
        let r: Int8
        if head.count <= Int(Int32.max) && body.count <= Int(Int32.max) {
            r = uniffi_sage_queue_fn_func_msg_put(id, Self.foreign(head), Self.foreign(body), timeout, status)
        } else {
            r = try putLarge(head, body, timeout)
        }
        if r > 0 { return true }
        if r == 0 { return false }
        throw Self.failure()
    }

    /// A message over the 2 GiB one ForeignBytes passes: as head and body, when it fits in two.
    @inline(never)
    private func putLarge(_ head: UnsafeRawBufferPointer, _ body: UnsafeRawBufferPointer, _ timeout: Double) throws -> Int8 {
        let size = head.count + body.count
        let limit = 2 * Int(Int32.max)
        guard head.isEmpty, size <= limit else {
            let max = handle.maxMessageSize()
            if UInt64(size) > max { throw QueueError.TooLarge(size: UInt64(size), maxSize: max) }
            throw QueueError.InvalidArgument(
                reason: "a message of \(size) bytes is over the \(limit) bytes one call passes")
        }
        let split = Int(Int32.max)
        return uniffi_sage_queue_fn_func_msg_put(
            id, Self.foreign(UnsafeRawBufferPointer(rebasing: body[..<split])),
            Self.foreign(UnsafeRawBufferPointer(rebasing: body[split...])), timeout, status)
    }

    @inline(__always)
    static func foreign(_ b: UnsafeRawBufferPointer) -> ForeignBytes {
        ForeignBytes(len: Int32(truncatingIfNeeded: b.count), data: b.baseAddress?.assumingMemoryBound(to: UInt8.self))
    }

    /// The typed error of this thread's last failed message call (the generated msgError()
    /// throws it).
    @inline(never)
    static func failure() -> Error {
        do {
            try msgError()
        } catch {
            return error
        }
        return QueueError.Io(reason: "a message call failed and left no error (a bug in sage-queue)")
    }

    /// The messages of a taken batch: the payloads, then their u32 little-endian lengths, then
    /// the u32 count.
    static func messages(_ view: UnsafeRawBufferPointer) throws -> [Data] {
        let bad = QueueError.Io(reason: "a taken batch of \(view.count) bytes is malformed (a bug in sage-queue)")
        guard view.count >= 4, let base = view.baseAddress else { throw bad }
        let count = Int(UInt32(littleEndian: view.loadUnaligned(fromByteOffset: view.count - 4, as: UInt32.self)))
        let lengthsAt = view.count - 4 - 4 * count
        guard lengthsAt >= 0 else { throw bad }
        var out: [Data] = []
        out.reserveCapacity(count)
        var pos = 0
        for i in 0..<count {
            let n = Int(UInt32(littleEndian: view.loadUnaligned(fromByteOffset: lengthsAt + 4 * i, as: UInt32.self)))
            guard n <= lengthsAt - pos else { throw bad }
            out.append(n == 0 ? Data() : Data(bytes: base + pos, count: n))
            pos += n
        }
        guard pos == lengthsAt else { throw bad }
        return out
    }
}

/// A batch in the table format (u32 little-endian lengths, then the payloads), in one
/// allocation, put from any message on.
final class Table {
    private let buf: UnsafeMutableRawBufferPointer
    private let count: Int
    private let total: Int
    /// Where message i's payload starts (count + 1 entries; the last is the total).
    private var starts: [Int]

    /// InvalidArgument beyond the 2 GiB one call passes.
    init(_ messages: [Data]) throws {
        var total = 0
        var starts = [Int]()
        starts.reserveCapacity(messages.count + 1)
        for m in messages {
            starts.append(total)
            total += m.count
        }
        starts.append(total)
        let lengthBytes = 4 * messages.count
        guard total <= Int(Int32.max), lengthBytes <= Int(Int32.max) else {
            throw QueueError.InvalidArgument(
                reason: "a batch of \(messages.count) messages and \(total) bytes is over the "
                    + "2 GiB one call passes; put it in parts")
        }
        buf = .allocate(byteCount: max(lengthBytes + total, 1), alignment: 8)
        let base = buf.baseAddress!
        for (i, m) in messages.enumerated() {
            (base + 4 * i).storeBytes(of: UInt32(m.count).littleEndian, as: UInt32.self)
            m.withUnsafeBytes { src in
                if let p = src.baseAddress, src.count > 0 {
                    (base + lengthBytes + starts[i]).copyMemory(from: p, byteCount: src.count)
                }
            }
        }
        count = messages.count
        self.total = total
        self.starts = starts
    }

    deinit { buf.deallocate() }

    /// msg_put_batch of the messages from `first` on: how many were put, or -1 (FAILED).
    func put(from first: Int, _ id: UInt64, _ status: UnsafeMutablePointer<RustCallStatus>, timeout: Double = 0) -> Int64 {
        let base = buf.baseAddress!
        let lengths = ForeignBytes(
            len: Int32(4 * (count - first)), data: (base + 4 * first).assumingMemoryBound(to: UInt8.self))
        let payloads = ForeignBytes(
            len: Int32(total - starts[first]),
            data: (base + 4 * count + starts[first]).assumingMemoryBound(to: UInt8.self))
        return uniffi_sage_queue_fn_func_msg_put_batch(id, lengths, payloads, timeout, status)
    }
}

/// The loans and views of one Queue whose closures are running, and a detach deferred until
/// they end.
final class Scopes: @unchecked Sendable {
    private let lock = NSLock()
    private var open = 0
    private var detachPending = false

    /// A loan or view begins: Closed if a detach is waiting.
    func enter() throws {
        lock.lock()
        defer { lock.unlock() }
        if detachPending { throw QueueError.Closed(reason: "this handle is being detached") }
        open += 1
    }

    /// A loan or view ended: true if the handle is to be detached now.
    func leave() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        open -= 1
        if open == 0 && detachPending {
            detachPending = false
            return true
        }
        return false
    }

    /// A detach was asked for: true if it must wait for the open scopes (it is then pending).
    func detachLater() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if open > 0 { detachPending = true }
        return open > 0
    }
}

/// Where the calling thread's view buffer is. The Rust side moves the buffer only when a
/// result longer than its capacity arrives, so each thread keeps the address and capacity it
/// last asked for (in a pthread key) and asks again only for a longer result.
enum View {
    private struct Place {
        var address: UnsafeRawPointer?
        var capacity: UInt64
    }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        let rc = pthread_key_create(&key) { free($0) }  // at thread exit
        precondition(rc == 0, "pthread_key_create failed: \(rc)")
        return key
    }()

    /// The view buffer, just filled with `n` (> 0) bytes by a take on this thread.
    @inline(__always)
    static func address(_ n: UInt64, _ status: UnsafeMutablePointer<RustCallStatus>) -> UnsafeRawPointer {
        if let p = pthread_getspecific(key) {
            let place = p.assumingMemoryBound(to: Place.self)
            if n <= place.pointee.capacity, let a = place.pointee.address { return a }
        }
        return refresh(status)
    }

    @inline(never)
    private static func refresh(_ status: UnsafeMutablePointer<RustCallStatus>) -> UnsafeRawPointer {
        var p = pthread_getspecific(key)?.assumingMemoryBound(to: Place.self)
        if p == nil {
            let fresh = malloc(MemoryLayout<Place>.stride)!.bindMemory(to: Place.self, capacity: 1)
            fresh.initialize(to: Place(address: nil, capacity: 0))
            pthread_setspecific(key, fresh)
            p = fresh
        }
        let address = UnsafeRawPointer(bitPattern: UInt(uniffi_sage_queue_fn_func_msg_view_address(status)))
        let capacity = uniffi_sage_queue_fn_func_msg_view_capacity(status)
        p!.pointee = Place(address: address, capacity: capacity)
        return address!
    }
}
