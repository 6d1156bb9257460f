// Acknowledged gets (at-least-once delivery): the UDL's msg_take_acked, msg_take_acked_batch,
// msg_receipt, msg_ack and msg_nack, called directly (MessagePath.kt), and the queue's policy.
//
//   val item = q.takeAcked(5.0)        take a message and keep it in one of the queue's 64
//   q.ack(item.receipt)                leases until acknowledged (the lease is freed) ...
//   q.nack(item.receipt)               ... or returned (delivered again, deliveries + 1)
//   q.acked(5.0) { item -> ... }       ack when the block returns, nack on an exception
//   q.getAckedBatch(16, 5.0)           up to 16 messages; q.ack(batch) acks them all
//   q.getAckedAsync(5.0)               suspend until one comes (no thread waits)
//   q.setAckPolicy(maxDeliveries = 5, visibilityTimeout = 30.0, deadLetter = "jobs-dead")
//
// A message whose consumer dies (SIGKILL included), detaches or closes its handle, or holds it
// past the queue's visibility timeout, is delivered again to the next get (acked or plain),
// its receipt's deliveries one higher; the old receipt is refused from then on (ack or nack
// throw QueueException.StaleReceipt). After max_deliveries a returned message goes to the
// dead-letter queue (or is dropped and counted). So a consumer may see a message twice: make
// its processing idempotent. Receipts belong to the queue, not to the handle: any handle of
// the queue (in any process) may ack or nack them.
//
// getAckedAsync waits as getAsync does (Async.kt: msg_line_state, a non-waiting take, then one
// msg_ready_async to the caller's deadline). A message returned to the queue (a nack, a holder
// dead or past the visibility timeout) moves the data line as a put does, so it wakes the wait.
//
// Names: the generated SageQueue has members getAcked(timeout), getAckedBatch(UInt, ULong,
// Double), ack(ULong), nack(ULong), setAckPolicy(AckPolicy) and ackPolicy(), which Kotlin
// prefers to any extension of the same signature. They stay usable (about 20x slower than
// these, and their receipt is a plain ULong); the calls here have signatures of their own, as
// take(timeout) and get() beside the generated get(timeout): takeAcked(timeout) (Empty after
// the timeout), getAcked() (waits without limit), getAckedOrNull(timeout).
package io.sage.queue

import kotlinx.coroutines.currentCoroutineContext
import kotlinx.coroutines.ensureActive

/**
 * What acknowledges ([SageQueue.ack]) or returns ([SageQueue.nack]) one message taken by an
 * acknowledged get, on any handle of its queue: the [lease] holding the message, the
 * [generation] of that lease (a later delivery has another), and how many times the message
 * has been delivered ([deliveries]: 1 the first time). [packed] is the UDL's u64 receipt.
 */
@JvmInline
value class Receipt(val packed: Long) {
    /** How many times the message has been delivered, this delivery included (1 the first time). */
    val deliveries: Int get() = ((packed ushr 16) and 0xFFFF).toInt()

    /** The lease (0 to 63) that holds the message. */
    val lease: Int get() = (packed and 0xFFFF).toInt()

    /** The lease's generation at this delivery. */
    val generation: Int get() = (packed ushr 32).toInt()

    override fun toString(): String = "Receipt(lease=$lease, deliveries=$deliveries, generation=$generation)"
}

/** A message taken by an acknowledged get: its bytes ([value]) and the [receipt] that acks or
 * nacks it. `val (value, receipt) = q.takeAcked()` takes it apart. */
class AckedItem(val value: ByteArray, val receipt: Receipt) {
    /** How many times the message has been delivered (1 the first time). */
    val deliveries: Int get() = receipt.deliveries

    operator fun component1(): ByteArray = value

    operator fun component2(): Receipt = receipt

    override fun toString(): String = "AckedItem(${value.size} bytes, $receipt)"
}

/** Messages taken by one [getAckedBatch], in queue order: a list of [AckedItem], also as
 * [values] and [receipts]. One [SageQueue.ack] (or [SageQueue.nack]) settles them all. */
class AckedBatch internal constructor(val values: List<ByteArray>, val receipts: List<Receipt>) :
    AbstractList<AckedItem>() {
    override val size: Int get() = values.size

    override fun get(index: Int): AckedItem = AckedItem(values[index], receipts[index])
}

/**
 * Take one message into a lease, waiting up to [timeout] seconds for one (Empty), forever by
 * default; [ack] or [nack] its receipt. Messages to deliver again come first. At most 64
 * messages of a queue are unacknowledged at once: with every lease held, an acked get waits as
 * if the queue were empty (a plain get still takes).
 */
fun SageQueue.takeAcked(timeout: Double = FOREVER): AckedItem =
    getAckedOrNull(timeout) ?: throw QueueException.Empty()

/** [takeAcked] waiting without limit. */
fun SageQueue.getAcked(): AckedItem = takeAcked(FOREVER)

/** Like [takeAcked], but null if no message came within [timeout] seconds (0.0: only look). */
fun SageQueue.getAckedOrNull(timeout: Double = 0.0): AckedItem? =
    MessagePath.takeAcked(this, timeout)?.let { (value, receipt) -> AckedItem(value, Receipt(receipt)) }

/** Acknowledge a message: its lease is freed, it is never delivered again. StaleReceipt if the
 * receipt is no longer valid (acked or nacked already, or the message was delivered again
 * after a visibility timeout); InvalidArgument if it is no receipt at all. */
fun SageQueue.ack(receipt: Receipt) {
    MessagePath.finish(MessagePath.id(MessagePath.thread(), this), receipt.packed, nack = false)
}

/** Return a message to the queue: it is delivered again (deliveries one higher), unless it was
 * delivered max_deliveries times (then dead-lettered or dropped). StaleReceipt as [ack]. */
fun SageQueue.nack(receipt: Receipt) {
    MessagePath.finish(MessagePath.id(MessagePath.thread(), this), receipt.packed, nack = true)
}

/** Acknowledge every message of [batch]. Each is acknowledged even if another fails; then the
 * first failure is thrown (the others suppressed in it). */
fun SageQueue.ack(batch: AckedBatch) = finishAll(batch.receipts, nack = false)

/** Return every message of [batch] to the queue, as [nack]; failures as ack(batch). */
fun SageQueue.nack(batch: AckedBatch) = finishAll(batch.receipts, nack = true)

private fun SageQueue.finishAll(receipts: List<Receipt>, nack: Boolean) {
    val id = MessagePath.id(MessagePath.thread(), this)
    var first: Throwable? = null
    for (r in receipts) {
        try {
            MessagePath.finish(id, r.packed, nack)
        } catch (e: QueueException) {
            first?.addSuppressed(e) ?: run { first = e }
        }
    }
    first?.let { throw it }
}

/**
 * Take one message ([takeAcked]: Empty after [timeout] seconds) and hand it to [block]: the
 * message is acknowledged when the block returns normally, and returned to the queue (nack)
 * when it throws (the exception is rethrown; a failing nack is added to it as suppressed).
 * The block's result is returned. If the block ran past the visibility timeout, the message
 * was delivered again meanwhile and the ack throws StaleReceipt.
 */
inline fun <R> SageQueue.acked(timeout: Double = FOREVER, block: (AckedItem) -> R): R {
    val item = takeAcked(timeout)
    val result = try {
        block(item)
    } catch (e: Throwable) {
        try {
            nack(item.receipt)
        } catch (suppressed: Throwable) {
            e.addSuppressed(suppressed)
        }
        throw e
    }
    ack(item.receipt)
    return result
}

/**
 * Wait up to [timeout] seconds for one message (Empty), then take up to [maxItems] messages
 * whose sizes total at most [maxBytes] (always at least one), each into a lease of its own,
 * with one call. Settle them with one [ack] (or [nack]) of the batch, or one by one by their
 * receipts. At most 64 messages of a queue are unacknowledged at once.
 */
fun SageQueue.getAckedBatch(
    maxItems: Int,
    timeout: Double = FOREVER,
    maxBytes: Long = Long.MAX_VALUE,
): AckedBatch {
    require(maxItems >= 1) { "maxItems must be at least 1, not $maxItems" }
    require(maxBytes >= 0) { "maxBytes must not be negative, not $maxBytes" }
    val (values, receipts) = MessagePath.takeAckedBatch(this, maxItems, maxBytes, timeout)
        ?: throw QueueException.Empty()
    return AckedBatch(values, receipts.map { Receipt(it) })
}

/**
 * Set the queue's policy of acknowledged gets, for every process at once. [maxDeliveries]:
 * after this many deliveries a returned message goes to [deadLetter] (the name of an existing
 * queue) or, without one, is dropped and counted (0: no limit). [visibilityTimeout]: seconds a
 * delivery may stay unacknowledged before the message is delivered again (0.0: no limit; a
 * dead holder's messages are delivered again anyway). InvalidArgument for a negative or NaN
 * timeout or a bad name. The generated `setAckPolicy(AckPolicy)` and `ackPolicy()` remain.
 */
fun SageQueue.setAckPolicy(maxDeliveries: Int = 0, visibilityTimeout: Double = 0.0, deadLetter: String? = null) {
    require(maxDeliveries >= 0) { "maxDeliveries must not be negative, not $maxDeliveries" }
    setAckPolicy(AckPolicy(maxDeliveries.toUInt(), visibilityTimeout, deadLetter))
}

/**
 * Take one message into a lease as [takeAcked] does, suspending until one comes (no thread
 * waits); Empty when [timeout] seconds pass first (FOREVER by default, 0.0 tries once), Closed
 * when the queue is closed while waiting. Cancel-safe: a cancelled call has taken nothing.
 * It waits as [getAsync] does; a message returned to the queue (a nack, a holder dead or past
 * the visibility timeout) wakes it as a put does.
 */
suspend fun SageQueue.getAckedAsync(timeout: Double = FOREVER): AckedItem {
    val waits = Waits(this, AsyncWait.DATA, AsyncWait.deadline(timeout))
    while (true) {
        currentCoroutineContext().ensureActive()
        val seen = waits.state()
        getAckedOrNull(0.0)?.let { return it }
        if (!waits.ready(seen)) throw QueueException.Empty()
    }
}
