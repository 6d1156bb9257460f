// Hand-written conveniences over the generated bindings (sage_queue.kt, made by build.sh):
// ByteArray put/get, default timeouts and arguments, and batches as lists of ByteArrays.
// Nothing else: each helper is one generated message call (plus, for gets, the address call).
//
// Why not the generated methods: every generated method call first clones the object handle
// (a second FFI call, ~8 us through JNA), and a returned `bytes` needs a third call to free it.
// So the helpers address the queue by its raw id (raw_* functions) and copy messages out of the
// calling thread's view buffer (raw_*_view + raw_view_address).
package io.sage.queue

import com.sun.jna.Pointer
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.util.Collections
import java.util.WeakHashMap

/** A timeout that waits without limit. Timeouts are seconds; 0.0 tries once without waiting. */
const val FOREVER: Double = -1.0

/** The ring size a queue gets when none is given: 1 MiB. */
const val DEFAULT_CAPACITY: Long = 1L shl 20

/** The file mode a queue gets when none is given: 0o600 (owner read and write). */
const val DEFAULT_MODE: Int = 0x180

// ---- constructors with defaults ----

/** Create a new queue (AlreadyExists if the name is taken). `maxItems` bounds the number of
 * messages in the queue, for every process (0: no bound; a put waits for a get). */
fun SageQueue.Companion.create(
    name: String,
    capacity: Long = DEFAULT_CAPACITY,
    mode: Int = DEFAULT_MODE,
    autoCleanup: Boolean = true,
    maxItems: Long = 0,
): SageQueue {
    require(capacity > 0) { "capacity must be positive, not $capacity" }
    require(maxItems >= 0) { "maxItems must not be negative, not $maxItems" }
    return create(name, capacity.toULong(), mode.toUInt(), autoCleanup, maxItems.toULong())
}

/** Attach to an existing queue (NotFound if there is none). */
fun SageQueue.Companion.open(name: String): SageQueue = open(name, true)

/** Attach to the queue, creating it first if needed (capacity, mode and maxItems apply only
 * then; an existing queue keeps its own). */
fun SageQueue.Companion.openOrCreate(
    name: String,
    capacity: Long = DEFAULT_CAPACITY,
    mode: Int = DEFAULT_MODE,
    autoCleanup: Boolean = true,
    maxItems: Long = 0,
): SageQueue {
    require(capacity > 0) { "capacity must be positive, not $capacity" }
    require(maxItems >= 0) { "maxItems must not be negative, not $maxItems" }
    return openOrCreate(name, capacity.toULong(), mode.toUInt(), autoCleanup, maxItems.toULong())
}

// ---- raw ids ----

private val rawIds: MutableMap<SageQueue, Long> = Collections.synchronizedMap(WeakHashMap())

/** This handle's raw id, asked once per handle. A closed handle's id raises Closed. */
private fun SageQueue.id(): ULong = rawIds.getOrPut(this) { rawId().toLong() }.toULong()

// ---- direct buffers ----

/** The largest scratch buffer a thread keeps; bigger messages get a buffer of their own. */
private const val SCRATCH_MAX = 1 shl 20
private val scratch = ThreadLocal<ByteBuffer>()

/** A direct little-endian buffer of `size` bytes at position 0, filled by `fill`. The
 * generated [ByRef] bytes argument passes a direct buffer's first `remaining()` bytes from its
 * base address (it ignores the position), so position must be 0. */
private inline fun direct(size: Int, fill: (ByteBuffer) -> Unit): ByteBuffer {
    val kept = scratch.get()
    val buf = when {
        kept != null && kept.capacity() >= size -> kept
        size > SCRATCH_MAX -> ByteBuffer.allocateDirect(size)
        else -> ByteBuffer.allocateDirect(maxOf(4096, Integer.highestOneBit(size - 1) shl 1))
            .also { scratch.set(it) }
    }
    buf.clear()
    buf.order(ByteOrder.LITTLE_ENDIAN)
    fill(buf)
    buf.flip()
    return buf
}

// ---- messages ----

/** Put one message; wait up to `timeout` seconds for room (Full), forever by default. */
fun SageQueue.put(data: ByteArray, timeout: Double = FOREVER) {
    rawPut(id(), direct(data.size) { it.put(data) }, timeout)
}

/** Copy `n` bytes out of the calling thread's view buffer (raw_*_view). The two calls and the
 * copy run back to back on one thread, so the address is that of the buffer just filled. */
private fun viewBytes(n: ULong): ByteArray {
    if (n == 0UL) return ByteArray(0)
    require(n <= Int.MAX_VALUE.toULong()) { "a result of $n bytes does not fit a ByteArray" }
    return Pointer(rawViewAddress().toLong()).getByteArray(0, n.toInt())
}

/** Take one message, waiting for it without limit. (`get(timeout)` is the generated method.) */
fun SageQueue.get(): ByteArray = viewBytes(rawGetView(id(), FOREVER))

/** Take one message, or null if none came within `timeout` seconds (0.0: only look). */
fun SageQueue.getOrNull(timeout: Double = 0.0): ByteArray? =
    try {
        viewBytes(rawGetView(id(), timeout))
    } catch (e: QueueException.Empty) {
        null
    }

/** Put one message; false if no room came within `timeout` seconds (0.0: only look). */
fun SageQueue.offer(data: ByteArray, timeout: Double = 0.0): Boolean =
    try {
        put(data, timeout)
        true
    } catch (e: QueueException.Full) {
        false
    }

// ---- batches ----

/** Frame buffers: each frame is a little-endian u32 length and that many bytes. */
object Frames {
    /** The size of the frame buffer of `messages`. */
    fun size(messages: List<ByteArray>): Long = messages.sumOf { 4L + it.size }

    /** Write the frames of `messages` into `out` (little-endian lengths). */
    fun write(messages: List<ByteArray>, out: ByteBuffer) {
        out.order(ByteOrder.LITTLE_ENDIAN)
        for (m in messages) {
            out.putInt(m.size)
            out.put(m)
        }
    }

    /** A new direct frame buffer of `messages` (position 0), for the generated putBatch. */
    fun encode(messages: List<ByteArray>): ByteBuffer {
        val size = size(messages)
        require(size <= Int.MAX_VALUE) { "a frame buffer holds at most 2 GiB" }
        return ByteBuffer.allocateDirect(size.toInt()).also { write(messages, it); it.flip() }
    }

    /** The messages of a frame buffer (as getBatch returns it). */
    fun decode(frames: ByteArray): List<ByteArray> = decode(ByteBuffer.wrap(frames))

    /** The messages of the frame buffer between `frames`' position and limit. */
    fun decode(frames: ByteBuffer): List<ByteArray> {
        val buf = frames.duplicate().order(ByteOrder.LITTLE_ENDIAN)
        val out = ArrayList<ByteArray>()
        while (buf.hasRemaining()) {
            require(buf.remaining() >= 4) { "frame ${out.size} is cut short" }
            val n = buf.getInt()
            require(n >= 0 && n <= buf.remaining()) { "frame ${out.size} says $n bytes" }
            out.add(ByteArray(n).also { buf.get(it) })
        }
        return out
    }
}

/** Put `messages` in order with one call; returns how many were put. When the timeout ends
 * part way the first ones stay put and the count says how many (Full only when none was). */
fun SageQueue.putMany(messages: List<ByteArray>, timeout: Double = FOREVER): Int {
    if (messages.isEmpty()) return 0
    val size = Frames.size(messages)
    require(size <= Int.MAX_VALUE) { "a batch holds at most 2 GiB" }
    return rawPutBatch(id(), direct(size.toInt()) { Frames.write(messages, it) }, timeout).toInt()
}

/** Wait up to `timeout` seconds for one message (Empty), then take up to `maxItems` messages
 * whose sizes total at most `maxBytes` (always at least one), with one call. */
fun SageQueue.getMany(
    maxItems: Int,
    timeout: Double = FOREVER,
    maxBytes: Long = Long.MAX_VALUE,
): List<ByteArray> {
    require(maxItems >= 1) { "maxItems must be at least 1" }
    require(maxBytes >= 0) { "maxBytes must not be negative" }
    val n = rawGetBatchView(id(), maxItems.toUInt(), maxBytes.toULong(), timeout)
    require(n <= Int.MAX_VALUE.toULong()) { "a batch of $n bytes does not fit a ByteBuffer" }
    // Decoded at once from the thread's view buffer (valid until its next raw_*_view call).
    return Frames.decode(Pointer(rawViewAddress().toLong()).getByteBuffer(0, n.toLong()))
}
