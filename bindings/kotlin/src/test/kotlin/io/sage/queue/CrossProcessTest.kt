// Several JVM processes on one queue (ChildPeer is the other process): every message crosses
// exactly once with its bytes intact, and a get blocked in one process wakes on a put in another.
package io.sage.queue

import io.sage.queue.TestSupport.jvm
import io.sage.queue.TestSupport.qname
import java.util.concurrent.TimeUnit
import kotlin.test.assertEquals
import kotlin.test.assertNotNull
import kotlin.test.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

@Timeout(300)
class CrossProcessTest {
    private fun finish(p: Process, what: String): String {
        val out = p.inputStream.bufferedReader().readText().trim()
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "$what did not exit")
        assertEquals(0, p.exitValue(), "$what exited with ${p.exitValue()}: $out")
        return out.lines().last()
    }

    @Test
    fun `two producer processes, this process consumes - exactly once, bytes intact`() {
        val count = 3000
        SageQueue.create(qname("xproc-in"), capacity = 256 * 1024).use { q ->
            val producers = (1..2).map { jvm("io.sage.queue.ChildPeer", "produce", q.name(), "$it", "$count") }
            val next = IntArray(3)
            var bad = 0
            var got = 0
            while (got < 2 * count) {
                val msgs = if (got % 2 == 0) q.getMany(64, 60.0) else listOf(q.take(60.0))
                for (m in msgs) {
                    val tag = ChildPeer.check(m)
                    // Each producer's messages arrive in its order.
                    if (tag == null || tag.second != next[tag.first]) bad++ else next[tag.first]++
                    got++
                }
            }
            producers.forEachIndexed { i, p -> assertEquals("produced $count", finish(p, "producer ${i + 1}")) }
            assertEquals(0, bad, "messages out of order or with wrong bytes")
            assertEquals(listOf(count, count), next.drop(1))
            assertEquals(0UL, q.qsize())
            assertEquals(2UL * count.toULong(), q.stats().msgsIn)
        }
    }

    @Test
    fun `this process produces, another consumes`() {
        val count = 3000
        SageQueue.create(qname("xproc-out"), capacity = 128 * 1024).use { q ->
            val consumer = jvm("io.sage.queue.ChildPeer", "consume", q.name(), "5", "$count")
            var seq = 0
            while (seq < count) {
                val k = minOf(10, count - seq)
                if (seq % 20 == 0) assertEquals(k, q.putMany((seq until seq + k).map { ChildPeer.message(5, it) }, 60.0))
                else (seq until seq + k).forEach { q.put(ChildPeer.message(5, it), 60.0) }
                seq += k
            }
            assertEquals("consumed $count bad 0", finish(consumer, "consumer"))
            assertEquals(0UL, q.qsize())
        }
    }

    @Test
    fun `a get blocked in another process wakes on a put here`() {
        SageQueue.create(qname("xproc-wake")).use { q ->
            val child = jvm("io.sage.queue.ChildPeer", "wait", q.name())
            val lines = child.inputStream.bufferedReader()
            assertEquals("waiting", lines.readLine())
            // Wait until the child is seen asleep on the queue (the count drops for a moment
            // between its sleeps, so seeing it once is the test), then put.
            val deadline = System.nanoTime() + 30_000_000_000L
            var waiting = 0u
            while (waiting == 0u && System.nanoTime() < deadline) {
                waiting = q.stats().consumersWaiting
                if (waiting == 0u) Thread.sleep(10)
            }
            assertEquals(1u, waiting, "consumers waiting")
            q.put("wake up".toByteArray())
            assertEquals("got wake up", assertNotNull(lines.readLine()))
            assertTrue(child.waitFor(60, TimeUnit.SECONDS))
            assertEquals(0, child.exitValue())
        }
    }
}
