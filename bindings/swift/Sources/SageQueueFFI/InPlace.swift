// Loans and views: messages written and read in place in the ring (the UDL's msg_loan,
// msg_commit, msg_abort, msg_pin, msg_pin_address, msg_unpin; python/sage_queue/inplace.py is
// the Python version). Each is scoped to a closure, Swift's idiom for memory that is valid for
// a while only (as Data.withUnsafeBytes): the buffer pointer the closure gets is valid inside
// the closure only and must not escape it (stored, returned, or used by a task that outlives
// it). After the closure, a loan's room belongs to the published message (or is free again),
// and a view's bytes may be reused for other messages at any time.
import Foundation
import SageQueueFFIRaw

extension Queue {
    /// Write one message of `count` bytes in place, in the ring, with no copy: `body` gets the
    /// message's room (`count` bytes, uninitialized: an earlier message's bytes, say) and
    /// fills it; the message is published (committed) when `body` returns, and given up
    /// (aborted: nothing published, the room freed) when it throws, whose error is then
    /// rethrown. Returns what `body` returns.
    ///
    /// Waits up to `timeout` seconds for room (QueueError.Full), forever by default.
    /// QueueError.TooLarge when `count` exceeds `maxMessageSize()`; InvalidArgument when this
    /// handle has a loan open already (one at a time per handle: loan from another Queue to
    /// write several at once) or the queue has maxItems. Consumers wait at an open loan
    /// (messages put after it are taken after it), so fill it without delay. A process killed
    /// with a loan open publishes nothing (the room is recovered).
    ///
    /// The buffer is valid only inside `body`: do not let it (or a pointer into it) escape.
    public func loan<T>(
        count: Int, timeout: Double = Queue.forever, _ body: (UnsafeMutableRawBufferPointer) throws -> T
    ) throws -> T {
        guard count >= 0 else {
            throw QueueError.InvalidArgument(reason: "a loan of \(count) bytes: the size must be 0 or more")
        }
        try scopes.enter()
        defer { leaveScope() }
        let address = uniffi_sage_queue_fn_func_msg_loan(id, UInt64(count), timeout, status)
        if address >= Self.failed { throw address == Self.nothing ? QueueError.Full : Self.failure() }
        let room = UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: UInt(address)), count: count)
        let result: T
        do {
            result = try body(room)
        } catch {
            // FAILED: the loan ended already (its handle was detached); the error is dropped.
            if uniffi_sage_queue_fn_func_msg_abort(id, status) < 0 { _ = Self.failure() }
            throw error
        }
        if uniffi_sage_queue_fn_func_msg_commit(id, status) < 0 { throw Self.failure() }
        return result
    }

    /// Read the next message in place, in the ring, with no copy: `body` gets its bytes, pinned
    /// (nobody writes them) until `body` returns or throws; then the message is released.
    /// The message is taken (as by `get`) whatever `body` does. Returns what `body` returns.
    ///
    /// Waits up to `timeout` seconds for a message (QueueError.Empty), forever by default.
    /// InvalidArgument beyond 64 views open at once on this handle (views nest: a `view`
    /// inside a `view`'s body, or views on several threads). While a view is open, the ring
    /// space from its message on is not reused: producers wait for room behind it, so keep
    /// views short. A process killed holding a view frees it.
    ///
    /// The buffer is valid only inside `body`: do not let it (or a pointer into it) escape.
    public func view<T>(timeout: Double = Queue.forever, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        try scopes.enter()
        defer { leaveScope() }
        let n = uniffi_sage_queue_fn_func_msg_pin(id, timeout, status)
        if n >= Self.failed { throw n == Self.nothing ? QueueError.Empty : Self.failure() }
        let address = uniffi_sage_queue_fn_func_msg_pin_address(status)
        defer {
            // FAILED: released already (its handle was detached); the error is dropped.
            if uniffi_sage_queue_fn_func_msg_unpin(id, address, status) < 0 { _ = Self.failure() }
        }
        return try body(UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: UInt(address)), count: Int(n)))
    }
}
