// Kotlin coroutines for SageQueue: suspending getAsync, putAsync, getManyAsync, putManyAsync,
// joinAsync, and messages() (a Flow that ends when the queue is closed).
//
// Each call reads the line's state (msg_line_state), makes the non-waiting message call
// (msg_try_take, msg_try_put, a batch with timeout 0) and, while that finds nothing (or no room),
// suspends in the generated `msgReadyAsync` with the state read before the try: a UniFFI future
// that completes when the state moved on (a message committed or returned to the queue, room
// returned, a task done) or the queue closed or the timeout ended, and never takes or puts
// anything itself. So a change between the try and the wait is never missed, a try that fails for
// a reason the counts do not show (a message behind another handle's open loan, room behind a
// pinned view) waits for the next change instead of spinning, a message is taken only by the
// non-waiting call, and nothing suspends between that call and the return: cancelling a waiting
// call (job.cancel(), the getAsync timeout) cancels only the wait and never loses, duplicates or
// half-puts a message. A coroutine cancelled before its next try takes nothing.
//
// No thread per waiter: every wait of the process is served by the native watcher threads (one
// per 127 queues waited on), which resume the coroutines through UniFFI's continuation callback
// (dispatched to the coroutine's own dispatcher). Exceptions are those of the blocking calls:
// QueueException.Empty / Full when the timeout ends, Closed when the queue is closed or removed
// (or this handle detached or closed) while waiting.
package io.sage.queue

import com.sun.jna.CallbackThreadInitializer
import com.sun.jna.Native
import java.util.concurrent.ConcurrentHashMap
import kotlin.concurrent.thread
import kotlin.coroutines.ContinuationInterceptor
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.currentCoroutineContext
import kotlinx.coroutines.ensureActive
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.FlowCollector
import kotlinx.coroutines.withContext

internal object AsyncWait {
    /** msg_ready_async's lines. */
    const val DATA = 0
    const val SPACE = 1
    const val TASKS = 2

    /** No deadline (System.nanoTime() terms). */
    const val NEVER = Long.MAX_VALUE

    init {
        // The watcher threads call UniFFI's continuation callback from native code: keep them
        // attached to the JVM (as daemon threads) instead of attaching and detaching one for
        // every wake-up (JNA's default), which costs a java.lang.Thread per wake-up.
        Native.setCallbackThreadInitializer(
            uniffiRustFutureContinuationCallbackImpl,
            CallbackThreadInitializer(true, false, "sq-watch"),
        )
    }

    /** The end of a wait of `timeout` seconds (NEVER: FOREVER, negative or +infinity). */
    fun deadline(timeout: Double): Long {
        if (timeout.isNaN()) throw QueueException.InvalidArgument("timeout must be a number of seconds, not NaN")
        if (timeout < 0 || timeout.isInfinite()) return NEVER
        val now = System.nanoTime()
        val ns = timeout * 1e9
        return if (ns >= (NEVER - now).toDouble()) NEVER else now + ns.toLong()
    }

    /** Whether a resumption could run inside the native callback, on a watcher thread that
     * holds the watcher's lock (Dispatchers.Unconfined, no dispatcher at all, or one that
     * needs no dispatch): the wait then runs on Dispatchers.Default. */
    fun inline(context: kotlin.coroutines.CoroutineContext): Boolean {
        val d = context[ContinuationInterceptor] ?: return true
        return d !is CoroutineDispatcher || !d.isDispatchNeeded(context)
    }
}

/** The async waits in flight, and a daemon thread that cancels those whose handle object was
 * closed (checked every 50 ms, a field read per wait; the thread ends after a second without
 * waits). */
internal object CloseWatch {
    class Watched(val q: SageQueue, val job: Job) {
        @Volatile var closed = false
    }

    private val waits = ConcurrentHashMap.newKeySet<Watched>()
    private var running = false
    private val lock = Object()

    fun add(q: SageQueue, job: Job): Watched {
        val w = Watched(q, job)
        waits.add(w)
        synchronized(lock) {
            if (!running) {
                running = true
                thread(isDaemon = true, name = "sage-queue-close-watch") { loop() }
            }
        }
        return w
    }

    fun remove(w: Watched) {
        waits.remove(w)
    }

    private fun loop() {
        var idle = 0
        while (true) {
            Thread.sleep(50)
            for (w in waits) {
                if (w.q.uniffiIsDestroyed && !w.closed) {
                    w.closed = true
                    w.job.cancel()
                }
            }
            synchronized(lock) {
                idle = if (waits.isEmpty()) idle + 1 else 0
                if (idle >= 20) { // a second without waits: the thread ends (a new one starts)
                    running = false
                    return
                }
            }
        }
    }
}

/** One call's waiting: its line, its deadline, the state read before each try. */
internal class Waits(private val q: SageQueue, private val line: Int, private val deadline: Long) {
    /** The line's state, read before a non-waiting try. */
    fun state(): Long = MessagePath.lineState(MessagePath.id(MessagePath.thread(), q), line)

    /** Wait until the line moved on from `seen` (or the queue closed); false when the
     * deadline passed first. */
    suspend fun ready(seen: Long): Boolean {
        val left = if (deadline == AsyncWait.NEVER) FOREVER else (deadline - System.nanoTime()) / 1e9
        if (deadline != AsyncWait.NEVER && left <= 0) return false
        val id = MessagePath.id(MessagePath.thread(), q).toULong()
        val caller = currentCoroutineContext()
        // The wait runs as a child job that CloseWatch cancels if the handle object is closed
        // (close(), use {}) meanwhile: the native wait holds the handle, so it would never see
        // that close by itself.
        val wait = Job(caller[Job])
        val watched = CloseWatch.add(q, wait)
        try {
            return withContext(if (AsyncWait.inline(caller)) wait + Dispatchers.Default else wait) {
                msgReadyAsync(id, line.toUByte(), seen.toULong(), left)
            }
        } catch (e: CancellationException) {
            if (watched.closed) throw QueueException.Closed("the handle was closed (close() or use {} freed it)")
            throw e
        } finally {
            CloseWatch.remove(watched)
            wait.complete()
        }
    }
}

/**
 * Take one message, suspending until one comes (no thread waits); Empty when [timeout]
 * seconds pass first (FOREVER by default, 0.0 tries once), Closed when the queue is closed
 * while waiting. Cancel-safe: a cancelled call has taken nothing.
 */
suspend fun SageQueue.getAsync(timeout: Double = FOREVER): ByteArray {
    val waits = Waits(this, AsyncWait.DATA, AsyncWait.deadline(timeout))
    while (true) {
        currentCoroutineContext().ensureActive()
        val seen = waits.state()
        MessagePath.take(this, 0.0)?.let { return it }
        if (!waits.ready(seen)) throw QueueException.Empty()
    }
}

/** Like [getAsync], but null when no message came within [timeout] seconds. */
suspend fun SageQueue.getOrNullAsync(timeout: Double): ByteArray? =
    try {
        getAsync(timeout)
    } catch (e: QueueException.Empty) {
        null
    }

/** Put one message, suspending until there is room; Full when [timeout] seconds pass first.
 * Cancel-safe: a cancelled call has put nothing. */
suspend fun SageQueue.putAsync(data: ByteArray, timeout: Double = FOREVER) = putAsync(null, data, timeout)

/** Put ONE message made of [head] followed by [body]; waits like [putAsync]. */
suspend fun SageQueue.putAsync(head: ByteArray?, body: ByteArray, timeout: Double = FOREVER) {
    val waits = Waits(this, AsyncWait.SPACE, AsyncWait.deadline(timeout))
    while (true) {
        currentCoroutineContext().ensureActive()
        val seen = waits.state()
        if (MessagePath.put(this, head, body, 0.0)) return
        if (!waits.ready(seen)) throw QueueException.Full()
    }
}

/** Suspend until one message comes (Empty after [timeout]), then take up to [maxItems]
 * messages whose sizes total at most [maxBytes] (at least one) with one call. */
suspend fun SageQueue.getManyAsync(
    maxItems: Int,
    timeout: Double = FOREVER,
    maxBytes: Long = Long.MAX_VALUE,
): List<ByteArray> {
    require(maxItems >= 1) { "maxItems must be at least 1, not $maxItems" }
    require(maxBytes >= 0) { "maxBytes must not be negative, not $maxBytes" }
    val waits = Waits(this, AsyncWait.DATA, AsyncWait.deadline(timeout))
    while (true) {
        currentCoroutineContext().ensureActive()
        val seen = waits.state()
        MessagePath.takeBatch(this, maxItems, maxBytes, 0.0)?.let { return it }
        if (!waits.ready(seen)) throw QueueException.Empty()
    }
}

/**
 * Put [messages] in order, as many per call as fit (whole messages), suspending for room
 * between calls; returns how many were put: all of them, or the first ones when [timeout]
 * ends part way (Full if none was put), as putMany. A cancelled call may have put the first
 * messages, never part of one.
 */
suspend fun SageQueue.putManyAsync(messages: List<ByteArray>, timeout: Double = FOREVER): Int {
    val total = messages.size
    if (total == 0) return 0
    val waits = Waits(this, AsyncWait.SPACE, AsyncWait.deadline(timeout))
    var done = 0
    while (true) {
        currentCoroutineContext().ensureActive()
        val seen = waits.state()
        done += MessagePath.putBatch(this, if (done == 0) messages else messages.subList(done, total), 0.0)
        if (done == total) return total
        if (!waits.ready(seen)) {
            if (done > 0) return done
            throw QueueException.Full()
        }
    }
}

/** Suspend until every message put has been marked done (taskDone); false when [timeout]
 * seconds pass first (join's meaning). */
suspend fun SageQueue.joinAsync(timeout: Double = FOREVER): Boolean {
    val waits = Waits(this, AsyncWait.TASKS, AsyncWait.deadline(timeout))
    while (true) {
        currentCoroutineContext().ensureActive()
        val seen = waits.state()
        if (join(0.0)) return true
        if (!waits.ready(seen)) return false
    }
}

/**
 * The queue's messages as they come, as a cold Flow: each collector takes messages (competing
 * with every other consumer) with [getAsync] and the flow completes when the queue is closed
 * or removed (or this handle closed). Every message taken is handed to the collector: the flow
 * does not drop a taken message when its coroutine is cancelled at that moment (cancellation
 * then comes at the collector's next suspension). Operators between (map, filter, take, ...)
 * follow Flow's own rules.
 */
fun SageQueue.messages(): Flow<ByteArray> = MessageFlow(this)

// Not the flow {} builder: its emit() checks for cancellation before handing the value on, so
// a message taken just as the coroutine was cancelled would be dropped there.
private class MessageFlow(private val q: SageQueue) : Flow<ByteArray> {
    override suspend fun collect(collector: FlowCollector<ByteArray>) {
        while (true) {
            val m = try {
                q.getAsync()
            } catch (e: QueueException.Closed) {
                return
            }
            collector.emit(m)
        }
    }
}
