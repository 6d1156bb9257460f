// Acknowledged gets (at-least-once delivery; the UDL's msg_take_acked, msg_take_acked_batch,
// msg_receipt, msg_ack and msg_nack, and the generated set_ack_policy and ack_policy).
//
// An acked get takes a message into a lease (one of 64 per queue) instead of taking it for
// good: `ack` frees the lease, `nack` returns the message to the queue (delivered again, with
// its delivery count one higher), and a message whose holder dies, detaches, or holds it past
// the queue's visibility timeout is delivered again too. A receipt that is no longer valid
// (acked or nacked already, or its message delivered again since) is refused with
// QueueError.StaleReceipt, and the newer delivery is untouched. After `maxDeliveries`
// deliveries (the AckPolicy, shared by every process) a returned message goes to the
// dead-letter queue, or is dropped.
//
// The calls are the message path's, as in Queue.swift: one plain C call with the Queue's id
// and shared call status, the message copied out of the calling thread's view buffer, and its
// receipt read with msg_receipt (the calling thread's last acked take) right after, with no
// suspension point between the take and the copy.
//
// getAckedAsync and getAckedManyAsync wait as getAsync does (msg_line_state, a non-waiting
// take, then one msg_ready_async on line 0 to the caller's deadline). A message returned to
// the queue (a nack, a holder dead or past the visibility timeout) moves line 0 as a put does,
// so it wakes the waiting task.
import Foundation
import SageQueueFFIRaw

/// What acks or nacks one message taken by an acknowledged get: the lease, its generation and
/// the delivery count, packed as the core hands it out (`index | deliveries << 16 | gen << 32`).
public struct Receipt: Hashable, Sendable, CustomStringConvertible {
    /// The packed receipt (msg_receipt's value; the generated `ack(receipt:)` takes it too).
    public let value: UInt64

    public init(_ value: UInt64) { self.value = value }

    /// How many times the message was delivered, this delivery included (1 the first time;
    /// 65535 stands for 65535 or more).
    public var deliveries: Int { Int((value >> 16) & 0xFFFF) }

    public var description: String { "Receipt(\(value), delivery \(deliveries))" }
}

/// One message taken by an acknowledged get: its bytes and the receipt that acks or nacks it.
public struct Delivery: Sendable {
    public let data: Data
    public let receipt: Receipt

    public init(data: Data, receipt: Receipt) {
        self.data = data
        self.receipt = receipt
    }

    /// How many times the message was delivered (1 the first time).
    public var deliveries: Int { receipt.deliveries }
}

/// The messages of one acknowledged batch get, in order, with one receipt each. `ack(_:)` and
/// `nack(_:)` of a batch settle every message of it.
public struct DeliveryBatch: Sendable, RandomAccessCollection {
    public let messages: [Data]
    public let receipts: [Receipt]

    public init(messages: [Data], receipts: [Receipt]) {
        precondition(messages.count == receipts.count, "one receipt per message")
        self.messages = messages
        self.receipts = receipts
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { messages.count }
    public subscript(i: Int) -> Delivery { Delivery(data: messages[i], receipt: receipts[i]) }
}

extension Queue {
    // ---- taking ----

    /// Take one message into a lease, waiting up to `timeout` seconds for it (QueueError.Empty),
    /// forever by default. The message stays unacknowledged until `ack` (done with it) or
    /// `nack` (deliver it again); messages delivered again are taken first. At most 64 messages
    /// of a queue are unacknowledged at once: with every lease held, this waits as if the
    /// queue were empty (a plain `get` still takes).
    public func getAcked(timeout: Double = Queue.forever) throws -> Delivery {
        let n = uniffi_sage_queue_fn_func_msg_take_acked(id, timeout, status)
        if n >= Self.failed { throw n == Self.nothing ? QueueError.Empty : Self.failure() }
        return try delivered(n)
    }

    /// Wait up to `timeout` seconds for one message (QueueError.Empty), then take up to
    /// `maxItems` messages whose sizes total at most `maxBytes` (always at least one) into
    /// leases, with one call. `ack(batch)` or `nack(batch)` settles them all.
    public func getAckedMany(
        maxItems: Int, maxBytes: UInt64 = .max, timeout: Double = Queue.forever
    ) throws -> DeliveryBatch {
        // maxItems below 1 is the core's InvalidArgument.
        let items = UInt32(clamping: max(maxItems, 0))
        let n = uniffi_sage_queue_fn_func_msg_take_acked_batch(id, items, maxBytes, timeout, status)
        if n >= Self.failed { throw n == Self.nothing ? QueueError.Empty : Self.failure() }
        return try deliveredBatch(n)
    }

    /// Take one message acked and hand it to `body`: acked when `body` returns, nacked (so
    /// delivered again) when it throws, whose error is then rethrown. Returns what `body`
    /// returns. Waits up to `timeout` seconds for a message (QueueError.Empty), forever by
    /// default. If the ack is refused (QueueError.StaleReceipt: `body` ran past the visibility
    /// timeout and the message was delivered again) that error is thrown after `body` returned.
    public func acked<T>(timeout: Double = Queue.forever, _ body: (Delivery) throws -> T) throws -> T {
        let d = try getAcked(timeout: timeout)
        let result: T
        do {
            result = try body(d)
        } catch {
            // A refused nack (the receipt went stale meanwhile) is dropped: the message is
            // delivered again either way.
            if uniffi_sage_queue_fn_func_msg_nack(id, d.receipt.value, status) < 0 { _ = Self.failure() }
            throw error
        }
        try ack(d.receipt)
        return result
    }

    /// `acked` for a batch: up to `maxItems` messages (as `getAckedMany`), all acked when
    /// `body` returns and all nacked when it throws.
    public func ackedMany<T>(
        maxItems: Int, maxBytes: UInt64 = .max, timeout: Double = Queue.forever,
        _ body: (DeliveryBatch) throws -> T
    ) throws -> T {
        let batch = try getAckedMany(maxItems: maxItems, maxBytes: maxBytes, timeout: timeout)
        let result: T
        do {
            result = try body(batch)
        } catch {
            for r in batch.receipts {
                if uniffi_sage_queue_fn_func_msg_nack(id, r.value, status) < 0 { _ = Self.failure() }
            }
            throw error
        }
        try ack(batch)
        return result
    }

    // ---- settling ----

    /// Acknowledge a message: its lease is freed and it is never delivered again.
    /// QueueError.StaleReceipt when the receipt is no longer valid (acked or nacked already,
    /// or the message was delivered again after a visibility timeout or a detach).
    public func ack(_ receipt: Receipt) throws {
        if uniffi_sage_queue_fn_func_msg_ack(id, receipt.value, status) < 0 { throw Self.failure() }
    }

    /// Acknowledge the message of a delivery (see `ack(_: Receipt)`).
    public func ack(_ delivery: Delivery) throws { try ack(delivery.receipt) }

    /// Acknowledge every message of a batch. Each is acked even when another's receipt is
    /// refused; the first error is thrown after.
    public func ack(_ batch: DeliveryBatch) throws {
        try settle(batch.receipts, uniffi_sage_queue_fn_func_msg_ack)
    }

    /// Return a message to the queue: it is delivered again (its delivery count one higher),
    /// or, past the policy's maxDeliveries, dead-lettered or dropped. StaleReceipt as `ack`.
    public func nack(_ receipt: Receipt) throws {
        if uniffi_sage_queue_fn_func_msg_nack(id, receipt.value, status) < 0 { throw Self.failure() }
    }

    /// Return the message of a delivery (see `nack(_: Receipt)`).
    public func nack(_ delivery: Delivery) throws { try nack(delivery.receipt) }

    /// Return every message of a batch, in order (the first error is thrown after).
    public func nack(_ batch: DeliveryBatch) throws {
        try settle(batch.receipts, uniffi_sage_queue_fn_func_msg_nack)
    }

    // ---- the policy ----

    /// Set the queue-wide policy of acknowledged gets (for every process): after
    /// `maxDeliveries` deliveries (0: no limit) a returned message goes to the queue named
    /// `deadLetter` (an existing queue), or is dropped and counted (stats().ackDropped) when
    /// there is none; a delivery unacknowledged for `visibilityTimeout` seconds (0: no limit)
    /// is delivered again. InvalidArgument for a negative or NaN timeout or a bad name.
    public func setAckPolicy(maxDeliveries: Int = 0, visibilityTimeout: Double = 0, deadLetter: String? = nil) throws {
        guard let max = UInt32(exactly: maxDeliveries) else {
            throw QueueError.InvalidArgument(reason: "maxDeliveries must be 0 to \(UInt32.max), not \(maxDeliveries)")
        }
        try handle.setAckPolicy(policy: AckPolicy(maxDeliveries: max, visibilityTimeout: visibilityTimeout, deadLetter: deadLetter))
    }

    /// Set the policy given as the generated record.
    public func setAckPolicy(_ policy: AckPolicy) throws { try handle.setAckPolicy(policy: policy) }

    /// The queue's policy of acknowledged gets.
    public func ackPolicy() -> AckPolicy { handle.ackPolicy() }

    // ---- async ----

    /// Take one message into a lease (as `getAcked`), waiting up to `timeout` seconds
    /// (QueueError.Empty), forever by default, without blocking a thread. Throws
    /// QueueError.Closed when the queue is closed while waiting and CancellationError when the
    /// task is cancelled: a cancelled call has taken nothing (a message taken is returned).
    public func getAckedAsync(timeout: Double = Queue.forever) async throws -> Delivery {
        try await ackedAsync(timeout) {
            let n = uniffi_sage_queue_fn_func_msg_take_acked(id, 0, status)
            if n >= Self.failed {
                if n == Self.nothing { return nil }
                throw Self.failure()
            }
            return try delivered(n)
        }
    }

    /// Wait up to `timeout` seconds for one message (QueueError.Empty), then take up to
    /// `maxItems` into leases (as `getAckedMany`), without blocking a thread.
    public func getAckedManyAsync(
        maxItems: Int, maxBytes: UInt64 = .max, timeout: Double = Queue.forever
    ) async throws -> DeliveryBatch {
        let items = UInt32(clamping: max(maxItems, 0))
        return try await ackedAsync(timeout) {
            let n = uniffi_sage_queue_fn_func_msg_take_acked_batch(id, items, maxBytes, 0, status)
            if n >= Self.failed {
                if n == Self.nothing { return nil }
                throw Self.failure()
            }
            return try deliveredBatch(n)
        }
    }

    /// The waiting of the async acked gets, as getAsync's: read line 0's state, try `take`
    /// (non-waiting, no suspension point inside), and while it finds nothing await
    /// msg_ready_async from that state until the deadline.
    private func ackedAsync<T>(_ timeout: Double, _ take: () throws -> T?) async throws -> T {
        var wait = try Waiting(self, .data, timeout)
        while true {
            try Task.checkCancellation()
            try wait.mark()  // the line's state before the try (msg_line_state)
            if let got = try take() { return got }
            if try await !wait.next() { throw QueueError.Empty }
        }
    }

    // ---- the message path ----

    /// The message an acked take just left in this thread's view (`n` bytes), with its receipt.
    @inline(__always)
    private func delivered(_ n: UInt64) throws -> Delivery {
        let data = n == 0 ? Data() : Data(bytes: View.address(n, status), count: Int(n))
        let r = uniffi_sage_queue_fn_func_msg_receipt(0, status)
        if r == 0 { throw QueueError.Io(reason: "an acked take left no receipt (a bug in sage-queue)") }
        return Delivery(data: data, receipt: Receipt(r))
    }

    /// The batch an acked batch take just left in this thread's view (`n` bytes, a table),
    /// with its receipts.
    private func deliveredBatch(_ n: UInt64) throws -> DeliveryBatch {
        let messages = try Self.messages(UnsafeRawBufferPointer(start: View.address(n, status), count: Int(n)))
        var receipts: [Receipt] = []
        receipts.reserveCapacity(messages.count)
        for i in 0..<messages.count {
            let r = uniffi_sage_queue_fn_func_msg_receipt(UInt32(i), status)
            if r == 0 { throw QueueError.Io(reason: "an acked batch take left no receipt \(i) (a bug in sage-queue)") }
            receipts.append(Receipt(r))
        }
        return DeliveryBatch(messages: messages, receipts: receipts)
    }

    /// msg_ack or msg_nack of every receipt; the first error is thrown after the last.
    private func settle(
        _ receipts: [Receipt], _ call: (UInt64, UInt64, UnsafeMutablePointer<RustCallStatus>) -> Int8
    ) throws {
        var first: Error?
        for r in receipts where call(id, r.value, status) < 0 {
            let e = Self.failure()
            if first == nil { first = e }
        }
        if let first { throw first }
    }
}
