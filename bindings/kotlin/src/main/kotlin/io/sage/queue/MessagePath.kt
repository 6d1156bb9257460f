// The message path of sage_queue.udl (msg_put, msg_take and their non-waiting msg_try_* forms,
// msg_put_batch, msg_take_batch, the view buffer, loans and pinned views, acknowledged takes),
// called straight through JNA direct mapping with plain integer arguments.
//
// Why: a generated call allocates and reads back JNA Structures (a fresh call status, a
// ForeignBytes by value per buffer), which costs tens of µs per message. These declarations
// bind the SAME exported symbols (the generated UniffiLib binds them too) with ABI-identical
// parameters: on x86-64 and aarch64 Linux a UniFFI `ForeignBytes {int32 len; uint8_t *data}`
// passed by value travels exactly like two integer arguments (`len` as Int, `data` as Long),
// and the call-status pointer is one shared native block, because these calls never write it
// (they report by their return value and keep a failure for msg_error; panics are caught in
// Rust). A failure is lifted by the generated `msgError()`, which throws the typed
// QueueException.
//
// Pinned: `pinned()` compares these declarations with the generated bindings (the `external
// fun` signatures of those symbols, the struct layouts, the contract version and the symbols'
// checksums). The first use of the message path fails with PinMismatch, listing the
// differences, when there is any (a UniFFI upgrade or a UDL change that moved them), and the
// JUnit test MessagePathPinTest fails the build.
package io.sage.queue

import com.sun.jna.Memory
import com.sun.jna.Native
import com.sun.jna.Platform
import com.sun.jna.Pointer
import com.sun.jna.Structure
import java.lang.ref.WeakReference
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.util.Collections
import java.util.WeakHashMap

/** The direct calls of the message path do not match the generated bindings they were pinned
 * to (a UniFFI upgrade, a UDL change, or a platform other than Linux x86-64/aarch64). */
class PinMismatch(val problems: List<String>) : LinkageError(
    "sage-queue's direct message calls do not match the generated bindings (update " +
        "MessagePath.kt to the new generated code): " + problems.joinToString("; "),
)

/** The native functions, bound by JNA direct mapping to the library the generated code loaded.
 * Parameter names say how each generated parameter is lowered. */
internal object MsgNative {
    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_put(
        id: Long, headLen: Int, headData: Long, bodyLen: Int, bodyData: Long, timeout: Double, status: Long,
    ): Byte

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_take(id: Long, timeout: Double, status: Long): Long

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_put_batch(
        id: Long, lengthsLen: Int, lengthsData: Long, payloadsLen: Int, payloadsData: Long, timeout: Double, status: Long,
    ): Long

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_take_batch(
        id: Long, maxItems: Int, maxBytes: Long, timeout: Double, status: Long,
    ): Long

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_view_address(status: Long): Long

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_view_capacity(status: Long): Long

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_try_put(
        id: Long, headLen: Int, headData: Long, bodyLen: Int, bodyData: Long, status: Long,
    ): Byte

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_try_take(id: Long, status: Long): Long

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_loan(id: Long, len: Long, timeout: Double, status: Long): Long

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_commit(id: Long, status: Long): Byte

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_abort(id: Long, status: Long): Byte

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_pin(id: Long, timeout: Double, status: Long): Long

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_pin_address(status: Long): Long

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_unpin(id: Long, address: Long, status: Long): Byte

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_line_state(id: Long, line: Byte, status: Long): Long

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_take_acked(id: Long, timeout: Double, status: Long): Long

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_take_acked_batch(
        id: Long, maxItems: Int, maxBytes: Long, timeout: Double, status: Long,
    ): Long

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_receipt(index: Int, status: Long): Long

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_ack(id: Long, receipt: Long, status: Long): Byte

    @JvmStatic external fun uniffi_sage_queue_fn_func_msg_nack(id: Long, receipt: Long, status: Long): Byte
}

internal object MessagePath {
    /** msg_take / msg_take_batch: nothing came before the timeout (u64 max). */
    const val NOTHING: Long = -1L

    /** msg_take / msg_take_batch: the call failed; msg_error raises why (u64 max - 1). */
    const val FAILED: Long = -2L

    /** The largest outgoing buffer a thread keeps; a bigger message gets a buffer of its own. */
    const val SCRATCH_MAX: Int = 1 shl 20

    // ---- the pin ----

    /** The UniFFI contract version the generated code and the library must have. */
    const val CONTRACT_VERSION: Int = 30

    private val J: Class<*> = java.lang.Long.TYPE
    private val I: Class<*> = Integer.TYPE
    private val D: Class<*> = java.lang.Double.TYPE
    private val B: Class<*> = java.lang.Byte.TYPE
    private val FB: Class<*> = ForeignBytes.ByValue::class.java
    private val ST: Class<*> = UniffiRustCallStatus::class.java

    /** Symbol -> the generated `external fun` parameter types and return type. */
    val GENERATED: Map<String, Pair<List<Class<*>>, Class<*>>> = linkedMapOf(
        "uniffi_sage_queue_fn_func_msg_put" to (listOf(J, FB, FB, D, ST) to B),
        "uniffi_sage_queue_fn_func_msg_take" to (listOf(J, D, ST) to J),
        "uniffi_sage_queue_fn_func_msg_put_batch" to (listOf(J, FB, FB, D, ST) to J),
        "uniffi_sage_queue_fn_func_msg_take_batch" to (listOf(J, I, J, D, ST) to J),
        "uniffi_sage_queue_fn_func_msg_view_address" to (listOf(ST) to J),
        "uniffi_sage_queue_fn_func_msg_view_capacity" to (listOf(ST) to J),
        "uniffi_sage_queue_fn_func_msg_try_put" to (listOf(J, FB, FB, ST) to B),
        "uniffi_sage_queue_fn_func_msg_try_take" to (listOf(J, ST) to J),
        "uniffi_sage_queue_fn_func_msg_loan" to (listOf(J, J, D, ST) to J),
        "uniffi_sage_queue_fn_func_msg_commit" to (listOf(J, ST) to B),
        "uniffi_sage_queue_fn_func_msg_abort" to (listOf(J, ST) to B),
        "uniffi_sage_queue_fn_func_msg_pin" to (listOf(J, D, ST) to J),
        "uniffi_sage_queue_fn_func_msg_pin_address" to (listOf(ST) to J),
        "uniffi_sage_queue_fn_func_msg_unpin" to (listOf(J, J, ST) to B),
        "uniffi_sage_queue_fn_func_msg_line_state" to (listOf(J, B, ST) to J),
        "uniffi_sage_queue_fn_func_msg_take_acked" to (listOf(J, D, ST) to J),
        "uniffi_sage_queue_fn_func_msg_take_acked_batch" to (listOf(J, I, J, D, ST) to J),
        "uniffi_sage_queue_fn_func_msg_receipt" to (listOf(I, ST) to J),
        "uniffi_sage_queue_fn_func_msg_ack" to (listOf(J, J, ST) to B),
        "uniffi_sage_queue_fn_func_msg_nack" to (listOf(J, J, ST) to B),
    )

    /** Checksum symbol -> the checksum the library reports (it hashes the UDL signature). */
    val CHECKSUMS: Map<String, Int> = linkedMapOf(
        "uniffi_sage_queue_checksum_func_msg_put" to 39926,
        "uniffi_sage_queue_checksum_func_msg_take" to 32319,
        "uniffi_sage_queue_checksum_func_msg_put_batch" to 59385,
        "uniffi_sage_queue_checksum_func_msg_take_batch" to 12873,
        "uniffi_sage_queue_checksum_func_msg_view_address" to 4301,
        "uniffi_sage_queue_checksum_func_msg_view_capacity" to 17569,
        "uniffi_sage_queue_checksum_func_msg_try_put" to 48097,
        "uniffi_sage_queue_checksum_func_msg_try_take" to 2003,
        "uniffi_sage_queue_checksum_func_msg_loan" to 16048,
        "uniffi_sage_queue_checksum_func_msg_commit" to 25496,
        "uniffi_sage_queue_checksum_func_msg_abort" to 33836,
        "uniffi_sage_queue_checksum_func_msg_pin" to 768,
        "uniffi_sage_queue_checksum_func_msg_pin_address" to 10052,
        "uniffi_sage_queue_checksum_func_msg_unpin" to 60646,
        "uniffi_sage_queue_checksum_func_msg_line_state" to 12530,
        "uniffi_sage_queue_checksum_func_msg_take_acked" to 25493,
        "uniffi_sage_queue_checksum_func_msg_take_acked_batch" to 30710,
        "uniffi_sage_queue_checksum_func_msg_receipt" to 29680,
        "uniffi_sage_queue_checksum_func_msg_ack" to 35205,
        "uniffi_sage_queue_checksum_func_msg_nack" to 522,
        // Not called directly (the generated suspend fun msgReadyAsync is), but Async.kt
        // relies on its meaning (the lines, the state read by msg_line_state before a try).
        "uniffi_sage_queue_checksum_func_msg_ready_async" to 50931,
        "uniffi_sage_queue_checksum_func_msg_error" to 31326,
        "uniffi_sage_queue_checksum_method_sagequeue_msg_id" to 42677,
    )

    /** How a generated parameter type travels in our declarations. */
    private fun lowered(t: Class<*>): List<Class<*>> = when (t) {
        FB -> listOf(I, J) // ForeignBytes {int32 len; uint8_t *data} by value
        ST -> listOf(J) // the call status pointer
        else -> listOf(t)
    }

    private fun fields(c: Class<*>): List<String>? =
        c.getAnnotation(Structure.FieldOrder::class.java)?.value?.toList()

    /** Differences between what the direct calls assume and the generated bindings (empty:
     * none). `generated`, `checksums` and `contract` are parameters so that a test can show a
     * difference is reported. */
    fun pinned(
        generated: Map<String, Pair<List<Class<*>>, Class<*>>> = GENERATED,
        checksums: Map<String, Int> = CHECKSUMS,
        contract: Int = CONTRACT_VERSION,
    ): List<String> {
        val problems = ArrayList<String>()
        if (!(Platform.isLinux() && Platform.ARCH in setOf("x86-64", "aarch64"))) {
            problems.add("ABI not checked on ${Platform.RESOURCE_PREFIX}")
        }
        if (fields(ForeignBytes::class.java) != listOf("len", "data") ||
            ForeignBytes::class.java.getDeclaredField("len").type != I ||
            ForeignBytes::class.java.getDeclaredField("data").type != Pointer::class.java
        ) {
            problems.add("ForeignBytes is not {Int len; Pointer data}")
        }
        if (fields(UniffiRustCallStatus::class.java) != listOf("code", "error_buf")) {
            problems.add("UniffiRustCallStatus fields are ${fields(UniffiRustCallStatus::class.java)}")
        }
        val lib = UniffiLib::class.java.declaredMethods.filter { java.lang.reflect.Modifier.isNative(it.modifiers) }
            .associateBy { it.name }
        val ours = MsgNative::class.java.declaredMethods.filter { java.lang.reflect.Modifier.isNative(it.modifiers) }
            .associateBy { it.name }
        for ((name, sig) in generated) {
            val gen = lib[name]
            val (params, ret) = sig
            if (gen == null) {
                problems.add("$name is not in the generated UniffiLib")
                continue
            }
            val genParams = gen.parameterTypes.toList()
            if (genParams != params || gen.returnType != ret) {
                problems.add("generated $name is ${genParams.map { it.simpleName }} -> ${gen.returnType.simpleName}")
            }
            val mine = ours[name]
            val want = genParams.flatMap { lowered(it) }
            if (mine == null) {
                problems.add("$name is not declared in MsgNative")
            } else if (mine.parameterTypes.toList() != want || mine.returnType != gen.returnType) {
                problems.add("MsgNative.$name is ${mine.parameterTypes.map { it.simpleName }} -> " +
                    "${mine.returnType.simpleName}, the generated one lowers to ${want.map { it.simpleName }} -> " +
                    gen.returnType.simpleName)
            }
        }
        for (name in ours.keys - generated.keys) problems.add("MsgNative.$name is not pinned")
        problems.addAll(Hold.problems()) // the generated object's call counter (InPlace.kt)
        // The library's own answers (loading IntegrityCheckingUniffiLib also runs the generated
        // contract and checksum checks against the generated constants).
        val version = IntegrityCheckingUniffiLib.ffi_sage_queue_uniffi_contract_version()
        if (version != contract) problems.add("UniFFI contract version is $version, pinned $contract")
        val integrity = IntegrityCheckingUniffiLib::class.java.declaredMethods.associateBy { it.name }
        for ((name, want) in checksums) {
            val m = integrity[name]
            if (m == null) {
                problems.add("$name is not in the generated IntegrityCheckingUniffiLib")
                continue
            }
            val got = (m.invoke(IntegrityCheckingUniffiLib) as Number).toInt() and 0xFFFF
            if (got != want) problems.add("$name is $got, pinned $want")
        }
        return problems
    }

    // ---- binding ----

    /** The one call status block every thread passes (these calls never write it). */
    private val statusBlock: Memory

    /** Its address. */
    @JvmField val STATUS: Long

    init {
        uniffiEnsureInitialized() // load the library the generated code uses, run its checks
        val problems = pinned()
        if (problems.isNotEmpty()) throw PinMismatch(problems)
        // The same name and class loader as the generated Native.register, so JNA hands back
        // the same NativeLibrary (one copy of the library: one registry, one view per thread).
        val name = System.getProperty("uniffi.component.sage_queue.libraryOverride") ?: "sage_queue"
        Native.register(MsgNative::class.java, name)
        statusBlock = Memory(UniffiRustCallStatus().size().toLong()).also { it.clear() }
        STATUS = Pointer.nativeValue(statusBlock)
        val viaGenerated = msgViewAddress().toLong()
        val direct = MsgNative.uniffi_sage_queue_fn_func_msg_view_address(STATUS)
        if (viaGenerated != direct) {
            throw PinMismatch(listOf("the direct calls reached another copy of the library than the generated ones"))
        }
    }

    /** True if anything was written to the shared status block (it never should be). */
    fun statusWritten(): Boolean = statusBlock.getByteArray(0, statusBlock.size().toInt()).any { it != 0.toByte() }

    // ---- per thread ----

    private val isVirtual: java.lang.reflect.Method? =
        try {
            Thread::class.java.getMethod("isVirtual")
        } catch (e: NoSuchMethodException) {
            null
        }

    /** One thread's outgoing buffer, where its native view buffer is, and its last queue id. */
    class PerThread {
        /** A virtual thread (Java 21+) may run on another carrier thread at its next call, so
         * the view's place (per carrier thread in Rust) is asked for every time. */
        val virtual: Boolean = isVirtual?.invoke(Thread.currentThread()) == true
        var out: ByteBuffer = ByteBuffer.allocateDirect(4096).order(ByteOrder.LITTLE_ENDIAN)
        var outAddress: Long = Pointer.nativeValue(Native.getDirectBufferPointer(out))
        var view: ByteBuffer = ByteBuffer.allocateDirect(0)
        var viewCapacity: Long = -1
        var lastQueue: WeakReference<SageQueue?> = WeakReference(null)
        var lastId: Long = 0

        fun grow(size: Int) {
            out = ByteBuffer.allocateDirect(maxOf(4096, Integer.highestOneBit(size - 1) shl 1))
                .order(ByteOrder.LITTLE_ENDIAN)
            outAddress = Pointer.nativeValue(Native.getDirectBufferPointer(out))
        }
    }

    private val local: ThreadLocal<PerThread> = ThreadLocal.withInitial { PerThread() }

    fun thread(): PerThread = local.get()

    // ---- ids ----

    private val ids: MutableMap<SageQueue, Long> = Collections.synchronizedMap(WeakHashMap())

    /** The handle's message-path id: asked once per handle (msgId()), remembered weakly. */
    fun id(t: PerThread, q: SageQueue): Long {
        if (t.lastQueue.get() === q && !q.uniffiIsDestroyed) return t.lastId
        // (A closed object's native handle may live on a while, held by a loan, a view or an
        // async wait: its calls fail all the same.)
        if (q.uniffiIsDestroyed) throw QueueException.Closed("the handle was closed (close() or use {} freed it)")
        val id = ids[q] ?: try {
            q.msgId().toLong().also { ids[q] = it }
        } catch (e: IllegalStateException) {
            if (q.uniffiIsDestroyed) throw QueueException.Closed("the handle was closed (close() or use {} freed it)")
            throw e
        }
        t.lastQueue = WeakReference(q)
        t.lastId = id
        return id
    }

    // ---- failures ----

    /** Throw the calling thread's last failure (a FAILED return), as the typed QueueException. */
    fun raise(): Nothing {
        msgError()
        throw IllegalStateException("a sage-queue message call failed without an error (a bug in sage-queue)")
    }

    // ---- outgoing ----

    /** Run `block` with a direct little-endian buffer of at least `size` bytes and its address:
     * the thread's own one, or for more than SCRATCH_MAX bytes a native block freed after. */
    inline fun <R> withOut(t: PerThread, size: Long, block: (ByteBuffer, Long) -> R): R {
        if (size <= t.out.capacity()) return block(t.out, t.outAddress)
        if (size <= SCRATCH_MAX) {
            t.grow(size.toInt())
            return block(t.out, t.outAddress)
        }
        require(size <= Int.MAX_VALUE) { "a message or batch of $size bytes is over 2 GiB" }
        val mem = Memory(size)
        try {
            return block(mem.getByteBuffer(0, size).order(ByteOrder.LITTLE_ENDIAN), Pointer.nativeValue(mem))
        } finally {
            mem.close()
        }
    }

    /** msg_put of `head` + `body` as one message: true if put, false if no room came in time.
     * A timeout of 0.0 is msg_try_put (the same call, one argument fewer). */
    fun put(q: SageQueue, head: ByteArray?, body: ByteArray, timeout: Double): Boolean {
        val t = thread()
        val id = id(t, q)
        val hn = head?.size ?: 0
        val r = withOut(t, hn.toLong() + body.size) { buf, address ->
            if (head != null) buf.put(0, head, 0, hn)
            buf.put(hn, body, 0, body.size)
            if (timeout == 0.0) {
                MsgNative.uniffi_sage_queue_fn_func_msg_try_put(id, hn, address, body.size, address + hn, STATUS)
            } else {
                MsgNative.uniffi_sage_queue_fn_func_msg_put(id, hn, address, body.size, address + hn, timeout, STATUS)
            }
        }
        return when (r.toInt()) {
            1 -> true
            0 -> false
            else -> raise()
        }
    }

    /** msg_put_batch of `messages` in the table format: how many were put (0: no room). */
    fun putBatch(q: SageQueue, messages: List<ByteArray>, timeout: Double): Int {
        val t = thread()
        val id = id(t, q)
        val count = messages.size
        var payload = 0L
        for (m in messages) payload += m.size
        val lengths = 4L * count
        require(lengths <= Int.MAX_VALUE && payload <= Int.MAX_VALUE) { "a batch holds at most 2 GiB" }
        val r = withOut(t, lengths + payload) { buf, address ->
            var i = 0
            var off = lengths.toInt()
            for (m in messages) {
                buf.putInt(4 * i++, m.size)
                buf.put(off, m, 0, m.size)
                off += m.size
            }
            MsgNative.uniffi_sage_queue_fn_func_msg_put_batch(
                id, lengths.toInt(), address, payload.toInt(), address + lengths, timeout, STATUS,
            )
        }
        if (r < 0) raise()
        return r.toInt()
    }

    // ---- incoming ----

    /** The thread's view buffer, just filled with `n` bytes by a take on this thread. Its place
     * is asked for again only when `n` is more than the capacity last seen (it moves only when
     * it grows), or on a virtual thread. */
    fun view(t: PerThread, n: Long): ByteBuffer {
        if (n > t.viewCapacity || t.virtual) {
            val address = MsgNative.uniffi_sage_queue_fn_func_msg_view_address(STATUS)
            val capacity = MsgNative.uniffi_sage_queue_fn_func_msg_view_capacity(STATUS)
            t.view = Pointer(address).getByteBuffer(0, minOf(capacity, Int.MAX_VALUE.toLong()))
                .order(ByteOrder.LITTLE_ENDIAN)
            t.viewCapacity = capacity
            check(n <= capacity) { "a result of $n bytes is longer than the view buffer ($capacity bytes)" }
        }
        return t.view
    }

    private fun tooLong(n: Long): Nothing =
        throw IllegalStateException("a result of $n bytes does not fit a JVM array (it was taken and is lost)")

    /** msg_take: one message, or null if none came in time. A timeout of 0.0 is msg_try_take. */
    fun take(q: SageQueue, timeout: Double): ByteArray? {
        val t = thread()
        val id = id(t, q)
        val n = if (timeout == 0.0) {
            MsgNative.uniffi_sage_queue_fn_func_msg_try_take(id, STATUS)
        } else {
            MsgNative.uniffi_sage_queue_fn_func_msg_take(id, timeout, STATUS)
        }
        return when (n) {
            NOTHING -> null
            FAILED -> raise()
            0L -> ByteArray(0)
            else -> {
                if (n > Int.MAX_VALUE - 8) tooLong(n)
                val out = ByteArray(n.toInt())
                view(t, n).get(0, out, 0, out.size)
                out
            }
        }
    }

    /** msg_take_batch: up to `maxItems` messages totalling at most `maxBytes` (at least one),
     * or null if none came in time. */
    fun takeBatch(q: SageQueue, maxItems: Int, maxBytes: Long, timeout: Double): List<ByteArray>? {
        val t = thread()
        val n = MsgNative.uniffi_sage_queue_fn_func_msg_take_batch(id(t, q), maxItems, maxBytes, timeout, STATUS)
        if (n == NOTHING) return null
        if (n == FAILED) raise()
        if (n > Int.MAX_VALUE) tooLong(n)
        return table(t, n)
    }

    /** The messages of a batch a take just left in the thread's view (`n` bytes): the
     * payloads, then their u32 lengths, then the u32 count. */
    private fun table(t: PerThread, n: Long): List<ByteArray> {
        val v = view(t, n)
        val end = n.toInt()
        check(end >= 4) { "a batch view of $n bytes" }
        val count = v.getInt(end - 4)
        val lengthsAt = end - 4 - 4L * count
        check(count >= 0 && lengthsAt >= 0) { "a batch view of $n bytes says $count messages" }
        val out = ArrayList<ByteArray>(count)
        var off = 0L
        for (i in 0 until count) {
            val len = v.getInt(lengthsAt.toInt() + 4 * i).toLong() and 0xFFFFFFFFL
            check(off + len <= lengthsAt) { "message $i of a batch view runs past its payloads" }
            out.add(ByteArray(len.toInt()).also { v.get(off.toInt(), it, 0, it.size) })
            off += len
        }
        check(off == lengthsAt) { "a batch view's lengths do not add up to its payloads" }
        return out
    }

    // ---- acknowledged takes (Acks.kt) ----

    /** msg_take_acked: one message and its receipt (packed, as msg_receipt gives it), or null
     * if none came in time. The receipt is read on the same thread right after the take. */
    fun takeAcked(q: SageQueue, timeout: Double): Pair<ByteArray, Long>? {
        val t = thread()
        val id = id(t, q)
        val n = MsgNative.uniffi_sage_queue_fn_func_msg_take_acked(id, timeout, STATUS)
        if (n == NOTHING) return null
        if (n == FAILED) raise()
        val receipt = receipt(0)
        if (n > Int.MAX_VALUE - 8) {
            finish(id, receipt, nack = true) // returned to the queue, not lost
            throw IllegalStateException("a message of $n bytes does not fit a JVM array (it was returned)")
        }
        val out = ByteArray(n.toInt())
        if (n > 0) view(t, n).get(0, out, 0, out.size)
        return out to receipt
    }

    /** msg_take_acked_batch: up to `maxItems` messages totalling at most `maxBytes` (at least
     * one) with their receipts, or null if none came in time. */
    fun takeAckedBatch(
        q: SageQueue,
        maxItems: Int,
        maxBytes: Long,
        timeout: Double,
    ): Pair<List<ByteArray>, List<Long>>? {
        val t = thread()
        val id = id(t, q)
        val n = MsgNative.uniffi_sage_queue_fn_func_msg_take_acked_batch(id, maxItems, maxBytes, timeout, STATUS)
        if (n == NOTHING) return null
        if (n == FAILED) raise()
        // Every receipt first (msg_receipt answers 0 past the last one), before anything
        // can fail.
        val receipts = ArrayList<Long>()
        while (receipts.size < maxItems) {
            val r = MsgNative.uniffi_sage_queue_fn_func_msg_receipt(receipts.size, STATUS)
            if (r == 0L) break
            receipts.add(r)
        }
        val messages = try {
            if (n > Int.MAX_VALUE) tooLong(n)
            table(t, n).also {
                check(it.size == receipts.size) { "a batch of ${it.size} messages with ${receipts.size} receipts" }
            }
        } catch (e: Throwable) {
            for (r in receipts) finish(id, r, nack = true, quiet = true) // returned, not lost
            throw e
        }
        return messages to receipts
    }

    /** msg_receipt: receipt `index` of the calling thread's last acked take. */
    private fun receipt(index: Int): Long {
        val r = MsgNative.uniffi_sage_queue_fn_func_msg_receipt(index, STATUS)
        check(r != 0L) { "an acked take returned no receipt $index (a bug in sage-queue)" }
        return r
    }

    /** msg_ack, or msg_nack when `nack`; the error is thrown (StaleReceipt, Closed, ...), or
     * when `quiet` forgotten and false returned. */
    fun finish(id: Long, receipt: Long, nack: Boolean, quiet: Boolean = false): Boolean {
        val r = if (nack) {
            MsgNative.uniffi_sage_queue_fn_func_msg_nack(id, receipt, STATUS)
        } else {
            MsgNative.uniffi_sage_queue_fn_func_msg_ack(id, receipt, STATUS)
        }
        if (r.toInt() == 1) return true
        if (!quiet) raise()
        try {
            msgError()
        } catch (e: QueueException) {
            // forgotten
        }
        return false
    }

    // ---- in place: loans and pinned views (InPlace.kt) ----

    /** msg_loan: the address of room for one message of `len` bytes, or 0 if no room came in
     * time (the ring never hands out address 0). */
    fun loan(id: Long, len: Long, timeout: Double): Long =
        when (val a = MsgNative.uniffi_sage_queue_fn_func_msg_loan(id, len, timeout, STATUS)) {
            NOTHING -> 0L
            FAILED -> raise()
            else -> a
        }

    /** msg_commit (publish) or msg_abort (give up) the handle's open loan. */
    fun endLoan(id: Long, commit: Boolean) {
        val r = if (commit) {
            MsgNative.uniffi_sage_queue_fn_func_msg_commit(id, STATUS)
        } else {
            MsgNative.uniffi_sage_queue_fn_func_msg_abort(id, STATUS)
        }
        if (r.toInt() != 1) raise()
    }

    /** msg_pin: the next message pinned in place as (address, length), or null if none came in
     * time. The address is read on the same thread right after the pin (no suspension or
     * blocking call between them, so a virtual thread cannot change carriers there). */
    fun pin(id: Long, timeout: Double): Pair<Long, Long>? {
        val n = MsgNative.uniffi_sage_queue_fn_func_msg_pin(id, timeout, STATUS)
        return when (n) {
            NOTHING -> null
            FAILED -> raise()
            else -> MsgNative.uniffi_sage_queue_fn_func_msg_pin_address(STATUS) to n
        }
    }

    /** msg_unpin; false (the error forgotten) if the handle has no view there any more (it
     * was closed), when `quiet`; else the error is thrown. */
    fun unpin(id: Long, address: Long, quiet: Boolean): Boolean {
        if (MsgNative.uniffi_sage_queue_fn_func_msg_unpin(id, address, STATUS).toInt() == 1) return true
        if (!quiet) raise()
        try {
            msgError()
        } catch (e: QueueException) {
            // forgotten: the handle closed, which released the view already
        }
        return false
    }

    // ---- async (Async.kt) ----

    /** msg_line_state: the state of `line` of the handle `id`, read before a non-waiting try
     * (msg_ready_async then waits until it moved on). */
    fun lineState(id: Long, line: Int): Long {
        val s = MsgNative.uniffi_sage_queue_fn_func_msg_line_state(id, line.toByte(), STATUS)
        if (s == FAILED) msgError() // throws if it failed (else FAILED was the state itself)
        return s
    }
}
