// Messages written and read in place in the ring: loans and views (the UDL's msg_loan,
// msg_commit, msg_abort, msg_pin, msg_unpin), as direct ByteBuffers over the queue's mapping.
//
//   q.loan(nbytes) { buf -> buf.put(...) }     write one message of nbytes in place; published
//                                              when the block returns, given up on an exception
//   q.view { buf -> buf.getLong(0) }           read the next message in place; the block's
//                                              result is returned, the message released after
//   q.openLoan(nbytes) / q.openView()          the same as AutoCloseable objects (use {})
//
// A direct ByteBuffer cannot be revoked, so a buffer kept past its loan or view would read (or
// write) ring memory that other messages reuse. What is done against it:
//   - the buffer is handed out only for the loan's or view's life, and invalidated at its end:
//     its limit and position are set to 0, so every read or write through it, relative or
//     absolute, single or bulk, throws (IndexOutOfBoundsException, BufferUnderflowException,
//     BufferOverflowException), and Loan.buffer / View.buffer throw IllegalStateException;
//   - NOT covered (documented, not preventable with java.nio): a buffer derived inside the
//     block (slice(), duplicate(), asReadOnlyBuffer(), asLongBuffer(), ...), or clear()/limit(n)
//     called on the invalidated buffer, still reach the old bytes. Copy out what must outlive
//     the block (buf.get(array)); never keep derived buffers;
//   - a View or Loan that is never closed is released when its buffer (and every buffer
//     derived from it) has been garbage-collected (a Cleaner), so a forgotten view holds the
//     ring only until the next GC and can never be released while a buffer still reaches it;
//   - a Loan or View holds its handle's native object until released (Hold), so the queue's
//     mapping outlives a close() (or use {} ending) of the handle meanwhile: a buffer in use
//     never points at unmapped memory (which would crash the JVM), and the handle detaches
//     when the last of them is released. detach() and unlink() still give up the handle's
//     open loan and release its views at once (a later commit fails with Closed; the views'
//     bytes may then be reused): end loans and views before those.
package io.sage.queue

import com.sun.jna.Pointer
import java.lang.ref.Cleaner
import java.lang.reflect.Field
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.util.concurrent.atomic.AtomicBoolean
import java.util.concurrent.atomic.AtomicLong

/** The thread that releases loans and views whose buffers were garbage-collected unreleased. */
internal object InPlaceCleaner {
    val cleaner: Cleaner = Cleaner.create { r -> Thread(r, "sage-queue-cleaner").also { it.isDaemon = true } }
}

/**
 * A hold on a handle object's native object, as the generated code takes one for the length of
 * every method call (its `callWithHandle`): the object's call counter is raised, so a close()
 * (destroy) meanwhile frees the native object only when the hold is released. A loan or view
 * holds its handle this way, so the queue's mapping outlives a close() of the handle while a
 * buffer may still point into it. (Done on the generated class's own counter and cleanable,
 * read once by reflection and checked by MessagePath.pinned(); a generated clone of the
 * handle would cost two generated calls, about 25 us, per loan or view.)
 */
internal class Hold private constructor(
    // The handle object itself, too: unreachable, it would be freed by its own cleaner.
    @Volatile private var owner: SageQueue?,
    private val counter: AtomicLong,
    private val cleanable: Any?,
) {
    private val released = AtomicBoolean(false)

    /** Release the hold (once); the last one after a close() frees the native object. */
    fun release() {
        if (released.compareAndSet(false, true)) {
            owner = null
            if (counter.decrementAndGet() == 0L) (cleanable as UniffiCleaner.Cleanable?)?.clean()
        }
    }

    companion object {
        private val counterField: Field? = field("callCounter")
        private val cleanableField: Field? = field("cleanable")

        private fun field(name: String): Field? =
            try {
                SageQueue::class.java.getDeclaredField(name).also { it.isAccessible = true }
            } catch (e: Exception) {
                null
            }

        /** What MessagePath.pinned() reports when the generated class changed. */
        fun problems(): List<String> {
            val out = ArrayList<String>()
            if (counterField?.type != AtomicLong::class.java) out.add("SageQueue.callCounter is not an AtomicLong")
            if (cleanableField?.type != UniffiCleaner.Cleanable::class.java) {
                out.add("SageQueue.cleanable is not a UniffiCleaner.Cleanable")
            }
            return out
        }

        /** Hold `q` (Closed if the handle object was closed already). */
        fun of(q: SageQueue): Hold {
            val counter = counterField!!.get(q) as AtomicLong
            while (true) {
                val c = counter.get()
                if (c == 0L) throw QueueException.Closed("the handle was closed (close() or use {} freed it)")
                if (counter.compareAndSet(c, c + 1)) break
            }
            return Hold(q, counter, cleanableField!!.get(q))
        }
    }
}

/** A direct little-endian ByteBuffer of `size` bytes at `address` (an empty one for 0 bytes). */
private fun directBuffer(address: Long, size: Int): ByteBuffer =
    (if (size == 0) ByteBuffer.allocateDirect(0) else Pointer(address).getByteBuffer(0, size.toLong()))
        .order(ByteOrder.LITTLE_ENDIAN)

/** Make a handed-out buffer unusable: every access through it throws from now on. */
private fun invalidate(buf: ByteBuffer) {
    buf.limit(0) // also moves the position to 0 and drops the mark
}

/**
 * Room for one message of [size] bytes claimed in the ring, written through [buffer] (a direct
 * ByteBuffer, position 0, limit [size], little-endian like the queue's own formats) and published by
 * [commit]; [abort] or [close] without a commit publishes nothing and frees the room.
 * Consumers wait at an open loan (messages put after it come after it): commit soon. One open
 * loan per handle at a time. Not thread-safe (one thread fills and commits it).
 */
class Loan internal constructor(
    private val id: Long,
    val size: Int,
    address: Long,
    private val keep: Hold,
) : AutoCloseable {
    private val open = AtomicBoolean(true)
    private var buf: ByteBuffer? = directBuffer(address, size)

    init {
        // A loan never committed nor aborted, whose buffer was collected: give it up (an open
        // loan would stop every consumer of the queue).
        // (The action must not reach this object, or the buffer would never be collected.)
        val state = open
        val qid = id
        val handle = keep
        InPlaceCleaner.cleaner.register(buf!!) {
            if (state.compareAndSet(true, false)) {
                try {
                    MessagePath.endLoan(qid, commit = false)
                } catch (e: Throwable) {
                    // the handle was detached: that gave the loan up
                }
                handle.release()
            }
        }
    }

    /** The loan's bytes; IllegalStateException after commit/abort/close. */
    val buffer: ByteBuffer
        get() = buf ?: throw IllegalStateException("this loan was committed or given up already")

    /** True until committed, aborted or closed. */
    val isOpen: Boolean get() = open.get()

    private fun end(commit: Boolean) {
        val b = buf ?: throw IllegalStateException("this loan was committed or given up already")
        buf = null
        invalidate(b)
        if (open.compareAndSet(true, false)) {
            try {
                MessagePath.endLoan(id, commit)
            } finally {
                keep.release()
            }
        }
    }

    /** Publish the message (all [size] bytes, whatever the buffer's position). */
    fun commit() = end(true)

    /** Give the loan up: nothing is published and the room is freed. */
    fun abort() = end(false)

    /** Abort unless committed or aborted already (so `use {}` publishes only after [commit]). */
    override fun close() {
        if (buf != null) end(false)
    }
}

/**
 * The next message, pinned where it lies in the ring: [buffer] is a read-only direct
 * ByteBuffer over its [size] bytes (position 0, limit [size], little-endian). The message stays
 * pinned, and the ring space from it on is not reused, until [close]: hold views briefly
 * (producers wait for room behind the oldest pinned message). At most 64 views per handle at
 * once. [close] may be called from any thread.
 */
class View internal constructor(
    private val id: Long,
    private val address: Long,
    val size: Int,
    private val keep: Hold,
) : AutoCloseable {
    private val pinned = AtomicBoolean(true)
    @Volatile private var buf: ByteBuffer?

    init {
        val whole = directBuffer(address, size)
        buf = whole.asReadOnlyBuffer().order(ByteOrder.LITTLE_ENDIAN)
        // Never closed, and no buffer reaches the bytes any more (the read-only buffer and
        // anything derived from it keep `whole` reachable): unpin.
        // (The action must not reach this object, or the buffer would never be collected.)
        val state = pinned
        val qid = id
        val at = address
        val handle = keep
        InPlaceCleaner.cleaner.register(whole) {
            if (state.compareAndSet(true, false)) {
                MessagePath.unpin(qid, at, quiet = true)
                handle.release()
            }
        }
    }

    /** The message's bytes (read-only); IllegalStateException after [close]. */
    val buffer: ByteBuffer
        get() = buf ?: throw IllegalStateException("this view was closed: its bytes may be reused")

    /** True until closed. */
    val isOpen: Boolean get() = pinned.get()

    /** A copy of the message's bytes (which outlives the view). */
    fun toByteArray(): ByteArray {
        val b = buffer
        return ByteArray(size).also { b.get(0, it, 0, size) }
    }

    /** Release the message (idempotent): its ring space can be reused. */
    override fun close() {
        val b = buf ?: return
        buf = null
        invalidate(b)
        if (pinned.compareAndSet(true, false)) {
            MessagePath.unpin(id, address, quiet = true)
            keep.release()
        }
    }
}

/**
 * Claim room for one message of [nbytes] bytes, waiting up to [timeout] seconds (Full), forever
 * by default. TooLarge when it can never fit; InvalidArgument when this handle has an open loan
 * already or the queue has maxItems. Fill [Loan.buffer], then [Loan.commit]; [Loan.close]
 * (`use {}`) without a commit publishes nothing.
 */
fun SageQueue.openLoan(nbytes: Int, timeout: Double = FOREVER): Loan {
    require(nbytes >= 0) { "nbytes must not be negative, not $nbytes" }
    val id = MessagePath.id(MessagePath.thread(), this)
    val keep = Hold.of(this)
    val address = try {
        MessagePath.loan(id, nbytes.toLong(), timeout)
    } catch (e: Throwable) {
        keep.release()
        throw e
    }
    if (address == 0L) {
        keep.release()
        throw QueueException.Full()
    }
    return Loan(id, nbytes, address, keep)
}

/**
 * Write one message of [nbytes] bytes in place: [block] fills the buffer (a direct ByteBuffer
 * over the ring, position 0, limit [nbytes]); the message is published when the block returns
 * normally (all [nbytes] bytes, whatever the position: the buffer is not cleared, it holds what
 * earlier messages left, so write all of it) and given up on an exception (nothing
 * published, the room freed, the exception rethrown). Waits for room like put (Full after
 * [timeout]). The buffer is invalid after the block: do not keep it or buffers made from it.
 */
inline fun <R> SageQueue.loan(nbytes: Int, timeout: Double = FOREVER, block: (ByteBuffer) -> R): R {
    val loan = openLoan(nbytes, timeout)
    val result = try {
        block(loan.buffer)
    } catch (e: Throwable) {
        try {
            loan.close()
        } catch (suppressed: Throwable) {
            e.addSuppressed(suppressed)
        }
        throw e
    }
    loan.commit()
    return result
}

/**
 * Pin the next message in place, waiting up to [timeout] seconds for one (Empty), forever by
 * default. InvalidArgument past 64 open views on this handle. Close the View (`use {}`) soon.
 */
fun SageQueue.openView(timeout: Double = FOREVER): View {
    val id = MessagePath.id(MessagePath.thread(), this)
    val keep = Hold.of(this)
    val pinned = try {
        MessagePath.pin(id, timeout)
    } catch (e: Throwable) {
        keep.release()
        throw e
    }
    if (pinned == null) {
        keep.release()
        throw QueueException.Empty()
    }
    val (address, n) = pinned
    if (n > Int.MAX_VALUE) {
        MessagePath.unpin(id, address, quiet = true)
        keep.release()
        throw IllegalStateException("a message of $n bytes does not fit a ByteBuffer (it was taken and is lost)")
    }
    return View(id, address, n.toInt(), keep)
}

/** Like [openView], but null if no message came within [timeout] seconds (0.0: only look). */
fun SageQueue.openViewOrNull(timeout: Double = 0.0): View? =
    try {
        openView(timeout)
    } catch (e: QueueException.Empty) {
        null
    }

/**
 * Read the next message in place: [block] gets a read-only direct ByteBuffer over its bytes
 * in the ring (position 0, limit = the message's length) and its result is returned; the
 * message is released when the block ends, also on an exception. Waits like take (Empty after
 * [timeout]). The buffer is invalid after the block: copy out what must outlive it.
 */
inline fun <R> SageQueue.view(timeout: Double = FOREVER, block: (ByteBuffer) -> R): R =
    openView(timeout).use { block(it.buffer) }
