// Java 21+ virtual threads move between carrier threads at every blocking point, and the native
// view buffer belongs to the carrier (a Rust thread-local): each get on a virtual thread must
// read the buffer of the carrier it runs on now. Skipped before Java 21.
package io.sage.queue

import io.sage.queue.TestSupport.qname
import java.nio.ByteBuffer
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.atomic.AtomicInteger
import kotlin.test.assertEquals
import org.junit.jupiter.api.Assumptions.assumeTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

@Timeout(120)
class VirtualThreadTest {
    /** A message that says who made it: (thread, seq), then a pattern, 8 bytes to ~100 KiB. */
    private fun message(thread: Int, seq: Int): ByteArray {
        val n = if (seq % 7 == 0) 70_000 + thread * 100 + seq else 8 + (thread * 31 + seq * 17) % 900
        val m = ByteArray(n) { ((it + thread * 3 + seq) and 0xff).toByte() }
        ByteBuffer.wrap(m).putInt(thread).putInt(seq)
        return m
    }

    @Test
    fun `gets on virtual threads read the view of the carrier they run on`() {
        val ofVirtual = try {
            Thread::class.java.getMethod("ofVirtual")
        } catch (e: NoSuchMethodException) {
            null
        }
        assumeTrue(ofVirtual != null, "no virtual threads before Java 21")
        val start = Class.forName("java.lang.Thread\$Builder").getMethod("start", Runnable::class.java)
        val threads = 32
        val perThread = 150
        SageQueue.create(qname("virtual"), capacity = 16L shl 20).use { q ->
            val seen = ConcurrentHashMap.newKeySet<Long>()
            val bad = AtomicInteger()
            val workers = (0 until threads).map { t ->
                start.invoke(ofVirtual!!.invoke(null), Runnable {
                    for (seq in 0 until perThread) {
                        q.put(message(t, seq))
                        // Every thread takes as many as it put, without blocking in native code
                        // (a native wait pins its carrier: two waiting threads would hold both
                        // carriers of a 2-core machine), unmounting between tries so that it
                        // resumes on any carrier.
                        var m: List<ByteArray>
                        do {
                            Thread.sleep(0, 1000 * (seq % 3))
                            m = if (seq % 5 == 0) q.getManyOrEmpty(1, 0.0) else listOfNotNull(q.getOrNull(0.0))
                        } while (m.isEmpty())
                        for (got in m) {
                            val b = ByteBuffer.wrap(got)
                            val who = b.int
                            val s = b.int
                            if (who !in 0 until threads || !got.contentEquals(message(who, s))) bad.incrementAndGet()
                            else if (!seen.add(who.toLong() shl 32 or s.toLong())) bad.incrementAndGet()
                        }
                    }
                }) as Thread
            }
            workers.forEach { it.join(100_000) }
            assertEquals(0UL, q.qsize())
            assertEquals(0, bad.get(), "messages read wrong or twice")
            assertEquals(threads * perThread, seen.size)
        }
    }
}
