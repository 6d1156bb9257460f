// Coroutines (Async.kt) against real producers in other threads and other JVMs: timeouts and
// prompt wake-ups, cancellation storms (every message exactly once), 1,000 waiters, closing
// while waiting, batches, join, the Flow, dispatchers that would resume inside the native
// callback, loops in several threads, and the cost of idle waiting (threads, CPU).
package io.sage.queue

import io.sage.queue.TestSupport.bytes
import io.sage.queue.TestSupport.jvm
import io.sage.queue.TestSupport.qname
import java.io.File
import java.lang.management.ManagementFactory
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger
import kotlin.concurrent.thread
import kotlin.coroutines.Continuation
import kotlin.coroutines.EmptyCoroutineContext
import kotlin.coroutines.startCoroutine
import kotlin.random.Random
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.joinAll
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.withTimeoutOrNull
import kotlinx.coroutines.yield
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

@Timeout(300)
class AsyncTest {
    private fun secondsSince(t0: Long) = (System.nanoTime() - t0) / 1e9

    private fun threadCpu(): Double = ManagementFactory.getThreadMXBean().currentThreadCpuTime / 1e9

    /** Busy-wait `ns` nanoseconds (a pause shorter than delay() can make). */
    private fun spin(ns: Long) {
        val end = System.nanoTime() + ns
        while (System.nanoTime() < end) Thread.onSpinWait()
    }

    private fun finish(p: Process, what: String): String {
        val out = p.inputStream.bufferedReader().readText().trim()
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "$what did not exit")
        assertEquals(0, p.exitValue(), "$what exited with ${p.exitValue()}: $out")
        return out.lines().last()
    }

    /** Messages of ChildPeer producers received: (producer, seq) -> times, and wrong ones. */
    private class Received {
        val times = ConcurrentHashMap<Pair<Int, Int>, Int>()
        val bad = AtomicInteger()

        fun add(m: ByteArray) {
            val tag = ChildPeer.check(m)
            if (tag == null) bad.incrementAndGet() else times.merge(tag, 1, Int::plus)
        }

        fun exactlyOnce(producer: Int, count: Int) {
            assertEquals(0, bad.get(), "messages with wrong bytes")
            val twice = times.filterValues { it > 1 }
            assertTrue(twice.isEmpty(), "${twice.size} messages received twice, e.g. ${twice.keys.take(5)}")
            val missing = (0 until count).filter { !times.containsKey(producer to it) }
            assertTrue(missing.isEmpty(), "${missing.size} messages lost, e.g. ${missing.take(5)}")
            assertEquals(count, times.size)
        }
    }

    @Test
    fun `timeouts fire, a put from another thread wakes a waiting get, a get wakes a waiting put`() = runBlocking {
        SageQueue.create(qname("aio-t"), capacity = 4096).use { q ->
            var t0 = System.nanoTime()
            assertFailsWith<QueueException.Empty> { q.getAsync(0.2) }
            assertTrue(secondsSince(t0) in 0.15..5.0, "getAsync(0.2) took ${secondsSince(t0)} s")
            t0 = System.nanoTime()
            assertFailsWith<QueueException.Empty> { q.getAsync(0.0) }
            assertNull(q.getOrNullAsync(0.05))
            assertTrue(secondsSince(t0) < 5.0)
            assertFailsWith<QueueException.InvalidArgument> { q.getAsync(Double.NaN) }

            q.putAsync(bytes(3000))
            t0 = System.nanoTime()
            assertFailsWith<QueueException.Full> { q.putAsync(bytes(3000, 1), 0.2) }
            assertTrue(secondsSince(t0) in 0.15..5.0, "putAsync(0.2) took ${secondsSince(t0)} s")
            assertContentEquals(bytes(3000), q.getAsync(1.0))

            val waiter = async { q.getAsync(30.0) }
            delay(200)
            assertFalse(waiter.isCompleted, "getAsync returned with nothing put")
            t0 = System.nanoTime()
            thread { q.put("wake".toByteArray()) }
            assertEquals("wake", String(waiter.await()))
            assertTrue(secondsSince(t0) < 5.0, "the wake-up took ${secondsSince(t0)} s")

            q.put(bytes(3000))
            val putter = async { q.putAsync("head:".toByteArray(), bytes(2000, 2), 30.0) }
            delay(200)
            assertFalse(putter.isCompleted, "putAsync returned with no room")
            thread { q.take() }
            putter.await()
            assertContentEquals("head:".toByteArray() + bytes(2000, 2), q.getAsync(1.0))
        }
    }

    @Test
    fun `a put bigger than the room, or a get behind an open loan, waits without spinning`() = runBlocking {
        SageQueue.create(qname("aio-room"), capacity = 4096).use { q ->
            repeat(3) { q.put(bytes(1000)) }
            q.take()
            // Not full (room for small messages), but no room for 1500 bytes: the try fails
            // while the queue has room, so the wait must last until room comes back (the
            // line's state moves on), not return at once again and again.
            val cpu = threadCpu()
            val t0 = System.nanoTime()
            assertFailsWith<QueueException.Full> { q.putAsync(bytes(1500), 1.0) }
            val used = threadCpu() - cpu
            assertTrue(secondsSince(t0) in 0.9..10.0, "putAsync(1.0) took ${secondsSince(t0)} s")
            assertTrue(used < 0.3, "putAsync used $used s of CPU in a second (spinning)")
            println("aio: a put waiting 1 s with free room too small for it used %.3f s of CPU".format(used))
            // It still goes in when a get makes room.
            val putter = async { q.putAsync(bytes(1500, 5), 10.0) }
            delay(50)
            q.take()
            q.take()
            putter.await()
            assertContentEquals(bytes(1500, 5), q.take(1.0))
        }
        SageQueue.create(qname("aio-loan")).use { q ->
            SageQueue.open(q.name()).use { other ->
                val loan = other.openLoan(100)
                q.put("after".toByteArray()) // queued behind the open loan
                val cpu = threadCpu()
                assertFailsWith<QueueException.Empty> { q.getAsync(0.5) }
                val used = threadCpu() - cpu
                assertTrue(used < 0.3, "getAsync used $used s of CPU in 0.5 s (spinning)")
                println("aio: a get waiting 0.5 s behind an open loan used %.3f s of CPU".format(used))
                val getter = async { q.getAsync(10.0) }
                delay(50)
                loan.buffer.put(bytes(100))
                loan.commit()
                assertContentEquals(bytes(100), getter.await())
                assertEquals("after", String(q.getAsync(1.0)))
            }
        }
    }

    @Test
    fun `cancellation storm - 10,000 gets cancelled at random moments, every message exactly once`() {
        val count = 3000
        val producer = 3
        SageQueue.create(qname("aio-storm"), capacity = 16 * 1024).use { q ->
            val child = jvm("io.sage.queue.ChildPeer", "trickle", q.name(), "$producer", "$count", "10")
            val got = Received()
            val cancelled = AtomicInteger()
            val completed = AtomicInteger()
            val t0 = System.nanoTime()
            runBlocking(Dispatchers.Default) {
                // Four storms at once: getAsync (two), getManyAsync, and collectors of messages().
                (0 until 4).map { kind ->
                    launch {
                        val rng = Random(kind)
                        while (got.times.size < count || cancelled.get() < 10_000) {
                            val job = launch {
                                when (kind) {
                                    0, 1 -> got.add(q.getAsync(60.0))
                                    2 -> q.getManyAsync(1 + rng.nextInt(8), 60.0).forEach { got.add(it) }
                                    else -> q.messages().collect { got.add(it) }
                                }
                            }
                            // Cancel at a random moment: before it ran, as it starts, while it
                            // waits, or as it completes.
                            when (rng.nextInt(4)) {
                                0 -> {}
                                1 -> yield()
                                2 -> spin(rng.nextLong(200_000))
                                else -> delay(rng.nextLong(3))
                            }
                            if (got.times.size >= count || kind == 3 || rng.nextDouble() < 0.85) job.cancel()
                            // A call left running may find no message ever again (another storm
                            // took the last ones): cancelled then.
                            while (!job.isCompleted) {
                                if (got.times.size >= count) job.cancel()
                                delay(1)
                            }
                            if (job.isCancelled) cancelled.incrementAndGet() else completed.incrementAndGet()
                        }
                    }
                }.joinAll()
            }
            assertEquals("produced $count", finish(child, "producer"))
            println("aio: storm: ${cancelled.get()} cancelled, ${completed.get()} completed, " +
                "$count messages, %.1f s".format(secondsSince(t0)))
            assertTrue(cancelled.get() >= 10_000)
            got.exactlyOnce(producer, count)
            assertEquals(0UL, q.qsize())
            assertEquals(0UL, q.stats().lost)
            // The watcher still serves waits promptly.
            runBlocking {
                val w = async { q.getAsync(10.0) }
                delay(20)
                q.put("after the storm".toByteArray())
                assertEquals("after the storm", String(w.await()))
            }
        }
    }

    @Test
    fun `timeout storm - getAsync timeouts and withTimeout around a get that records inside, exactly once`() {
        val count = 3000
        val producer = 6
        SageQueue.create(qname("aio-tstorm"), capacity = 16 * 1024).use { q ->
            val child = jvm("io.sage.queue.ChildPeer", "trickle", q.name(), "$producer", "$count", "5")
            val got = Received()
            val timeouts = AtomicInteger()
            runBlocking(Dispatchers.Default) {
                (0 until 4).map { kind ->
                    launch {
                        val rng = Random(10 + kind)
                        while (got.times.size < count || timeouts.get() < 3000) {
                            if (kind % 2 == 0) {
                                try {
                                    got.add(q.getAsync(rng.nextDouble(0.0, 0.003)))
                                } catch (e: QueueException.Empty) {
                                    timeouts.incrementAndGet()
                                }
                            } else {
                                // The message is handled inside the block: a timeout that cancels
                                // the block as getAsync returns cannot drop it (a value returned
                                // out of withTimeout could be dropped: see the README).
                                val r = withTimeoutOrNull(1L + rng.nextLong(2)) { got.add(q.getAsync()) }
                                if (r == null) timeouts.incrementAndGet()
                            }
                        }
                    }
                }.joinAll()
            }
            assertEquals("produced $count", finish(child, "producer"))
            println("aio: timeout storm: ${timeouts.get()} timeouts, $count messages")
            got.exactlyOnce(producer, count)
            assertEquals(0UL, q.qsize())
        }
    }

    @Test
    fun `1,000 coroutines waiting on one queue are all served, 50 with short timeouts time out`() {
        val count = 1000
        SageQueue.create(qname("aio-1000"), capacity = 1L shl 20).use { q ->
            runBlocking {
                val waiters = (0 until count).map { async { q.getAsync(120.0) } }
                val timed = (0 until 50).map { async { runCatching { q.getAsync(0.3) } } }
                // The short waits end (Empty) before anything is put: on a loaded machine a
                // late one could otherwise take a message that a long waiter then never gets.
                val late = timed.awaitAll()
                assertEquals(50, late.count { it.exceptionOrNull() is QueueException.Empty }, "$late")
                val child = jvm("io.sage.queue.ChildPeer", "produce", q.name(), "4", "$count")
                val got = Received()
                waiters.awaitAll().forEach { got.add(it) }
                assertEquals("produced $count", finish(child, "producer"))
                got.exactlyOnce(4, count)
            }
        }
    }

    @Test
    fun `unlinking, detaching or closing the queue while coroutines wait makes them throw Closed promptly`() {
        for (how in listOf("unlink by another handle", "unlink", "detach", "close")) {
            val q = SageQueue.create(qname("aio-close"), capacity = 4096)
            val other = SageQueue.open(q.name())
            val full = SageQueue.create(qname("aio-close-full"), capacity = 4096)
            full.put(bytes(3000))
            try {
                // A task taken and not done, for joinAsync to wait on (before the getters
                // start, so that none of them takes this message instead).
                q.put(bytes(10))
                q.take()
                runBlocking(Dispatchers.Default) {
                    val getters = (0 until 20).map { async { runCatching { q.getAsync() } } }
                    val batches = (0 until 5).map { async { runCatching { q.getManyAsync(10) } } }
                    val flow = async { runCatching { q.messages().toList() } }
                    val joiner = async { runCatching { q.joinAsync() } }
                    delay(200)
                    val t0 = System.nanoTime()
                    when (how) {
                        "unlink by another handle" -> other.unlink()
                        "unlink" -> q.unlink()
                        "detach" -> q.detach()
                        "close" -> q.close()
                    }
                    val results = withTimeout(30_000) { (getters + batches).awaitAll() }
                    val took = secondsSince(t0)
                    for (r in results) {
                        assertTrue(r.exceptionOrNull() is QueueException.Closed, "$how: $r")
                    }
                    assertEquals(Result.success(emptyList()), withTimeout(30_000) { flow.await() }, "$how: the flow")
                    assertTrue(joiner.await().exceptionOrNull() is QueueException.Closed, "$how: joinAsync")
                    // (A detach is seen at the native watcher's next look, at most 1 s later.)
                    val limit = if (how == "detach") 3.0 else 2.0
                    assertTrue(took < limit, "$how: the waiters took $took s to see the close")
                    println("aio: $how: 20 gets, 5 batches, a flow and a join ended in %.3f s".format(took))
                }
                // A waiting put sees its queue removed too.
                runBlocking {
                    val putter = async { runCatching { full.putAsync(bytes(3000, 1)) } }
                    delay(100)
                    SageQueue.open(full.name()).use { it.unlink() }
                    assertTrue(withTimeout(30_000) { putter.await() }.exceptionOrNull() is QueueException.Closed)
                }
            } finally {
                other.close()
                q.close()
                full.close()
            }
        }
    }

    @Test
    fun `batches, join and the flow`() = runBlocking {
        SageQueue.create(qname("aio-batch"), capacity = 8192).use { q ->
            assertEquals(10, q.putManyAsync((0 until 10).map { "m$it".toByteArray() }))
            assertEquals(listOf("m0", "m1", "m2", "m3"), q.getManyAsync(4).map { String(it) })
            assertEquals((4 until 10).map { "m$it" }, q.getManyAsync(100, 1.0).map { String(it) })
            assertEquals(0, q.putManyAsync(emptyList()))
            // A batch bigger than the ring goes in as room is made, in order.
            val big = (0 until 20).map { bytes(1000, it) }
            val putter = async { q.putManyAsync(big, 30.0) }
            val taken = ArrayList<ByteArray>()
            while (taken.size < 20) taken.addAll(q.getManyAsync(3, 30.0))
            assertEquals(20, putter.await())
            taken.forEachIndexed { i, m -> assertContentEquals(bytes(1000, i), m, "message $i") }
            // Only some fit before the timeout: the count; none: Full.
            val n = q.putManyAsync(big, 0.1)
            assertTrue(n in 1 until 20, "$n of 20 put")
            assertFailsWith<QueueException.Full> { q.putManyAsync(big, 0.1) }
            assertFailsWith<QueueException.TooLarge> { q.putManyAsync(listOf(bytes(10_000))) }

            assertFalse(q.joinAsync(0.1), "joinAsync with unfinished tasks")
            val joiner = async { q.joinAsync(30.0) }
            var drained = 0
            while (q.getOrNull() != null) drained++
            assertEquals(n, drained)
            delay(100)
            assertFalse(joiner.isCompleted)
            val tasks = q.stats().unfinishedTasks
            thread { q.taskDone(tasks) }
            assertTrue(joiner.await(), "joinAsync woken by taskDone")
            assertTrue(q.joinAsync(0.0))

            // The flow: every message, until the queue is closed.
            for (i in 0 until 3) q.putAsync("f$i".toByteArray())
            launch {
                delay(100)
                q.put("last".toByteArray())
                delay(100)
                SageQueue.open(q.name()).use { it.unlink() }
            }
            assertEquals(listOf("f0", "f1", "f2", "last"), q.messages().toList().map { String(it) })
        }
    }

    @Test
    fun `Dispatchers_Unconfined and a coroutine without a dispatcher do not stall the watcher`() {
        // Resumed inside the native callback, such a coroutine would poll again on the watcher
        // thread while the watcher holds its lock (a deadlock of every async wait of the
        // process): Async.kt waits on Dispatchers.Default for them.
        SageQueue.create(qname("aio-unconfined")).use { q ->
            val n = 200
            val producer = thread {
                for (i in 0 until n) {
                    Thread.sleep(1)
                    q.put("u$i".toByteArray())
                }
            }
            val got = ArrayList<String>()
            runBlocking {
                withTimeout(60_000) {
                    launch(Dispatchers.Unconfined) { repeat(n) { got.add(String(q.getAsync(30.0))) } }.join()
                }
            }
            producer.join()
            assertEquals((0 until n).map { "u$it" }, got)

            val done = CountDownLatch(1)
            var result: Result<ByteArray>? = null
            val getter: suspend () -> ByteArray = { q.getAsync(30.0) }
            getter.startCoroutine(Continuation(EmptyCoroutineContext) { r -> result = r; done.countDown() })
            Thread.sleep(100)
            q.put("no dispatcher".toByteArray())
            assertTrue(done.await(30, TimeUnit.SECONDS), "a coroutine without a dispatcher was never resumed")
            assertEquals("no dispatcher", String(result!!.getOrThrow()))
        }
    }

    @Test
    fun `event loops in several threads share the queue, exactly once`() {
        val count = 4000
        SageQueue.create(qname("aio-threads"), capacity = 64 * 1024).use { q ->
            val got = Received()
            val consumers = (0 until 4).map {
                thread {
                    runBlocking {
                        // Two coroutines per thread's loop, until the STOP messages.
                        (0 until 2).map {
                            launch {
                                while (true) {
                                    val m = q.getAsync(60.0)
                                    if (m.size == 4) break
                                    got.add(m)
                                }
                            }
                        }.joinAll()
                    }
                }
            }
            runBlocking {
                for (seq in 0 until count) {
                    q.putAsync(ChildPeer.message(8, seq))
                    if (seq % 100 == 0) delay(1)
                }
                repeat(8) { q.putAsync("STOP".toByteArray()) }
            }
            consumers.forEach { it.join(60_000) }
            got.exactlyOnce(8, count)
        }
    }

    @Test
    fun `1,000 coroutines waiting on 200 queues cost 2 watcher threads and no CPU while idle`() {
        val queues = (0 until 200).map { SageQueue.create(qname("aio-idle"), capacity = 4096) }
        try {
            runBlocking(Dispatchers.Default) {
                val waiters = queues.flatMap { q -> (0 until 5).map { async { q.getAsync(60.0) } } }
                delay(1000) // settled (the JIT, the GC of earlier tests)
                val watchers = File("/proc/self/task").listFiles()!!
                    .count { runCatching { File(it, "comm").readText().trim() }.getOrNull() == "sq-watch" }
                val stat = { File("/proc/self/stat").readText().substringAfterLast(')').trim().split(" ") }
                val ticks = { stat().let { it[11].toLong() + it[12].toLong() } } // utime + stime
                val before = ticks()
                delay(1000)
                val cpu = (ticks() - before) / 100.0
                println("aio: 1,000 waiters on 200 queues: $watchers watcher threads, %.2f s CPU in 1 s idle".format(cpu))
                assertTrue(watchers in 1..2, "$watchers watcher threads")
                assertTrue(cpu < 0.3, "$cpu s of CPU in 1 s with every coroutine waiting")
                // One waiter of each queue gets the message put there, the others wait on.
                queues.forEachIndexed { i, q -> q.put("q$i".toByteArray()) }
                withTimeout(30_000) { while (waiters.count { it.isCompleted } < queues.size) delay(10) }
                delay(100)
                for (i in queues.indices) {
                    val done = waiters.subList(5 * i, 5 * i + 5).filter { it.isCompleted }
                    assertEquals(1, done.size, "queue $i: ${done.size} waiters served")
                    assertEquals("q$i", String(done[0].await()))
                }
                waiters.forEach { it.cancel() }
            }
        } finally {
            queues.forEach { it.close() }
        }
    }
}
