// Put+get timings per message, printed in µs. Runs only when asked:
//   mvn -q test -Dtest=BenchTest -Dsage.bench=true        (from bindings/kotlin)
// Each case warms up (the JIT, the thread's buffers) then times several rounds and prints the
// best and the median round. Nothing is asserted about the times.
package io.sage.queue

import io.sage.queue.TestSupport.bytes
import io.sage.queue.TestSupport.qname
import java.nio.ByteBuffer
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.condition.EnabledIfSystemProperty

@EnabledIfSystemProperty(named = "sage.bench", matches = "true")
class BenchTest {
    private fun run(label: String, messages: Int, rounds: Int = 7, body: (SageQueue, Int) -> Unit) {
        SageQueue.create(qname("bench"), capacity = 4L shl 20).use { q ->
            repeat(3) { body(q, messages) } // warm up
            val us = (0 until rounds).map {
                val t = System.nanoTime()
                body(q, messages)
                (System.nanoTime() - t) / 1e3 / messages
            }.sorted()
            println("bench: %-48s best %7.3f  median %7.3f us per message".format(label, us.first(), us[rounds / 2]))
        }
    }

    @Test
    fun bench() {
        val m64 = bytes(64)
        run("put+get 64 B, put(ByteArray) + get()", 200_000) { q, n ->
            repeat(n) { q.put(m64); q.get() }
        }
        run("put+get 64 B, offer + getOrNull (timeout 0)", 200_000) { q, n ->
            repeat(n) { q.offer(m64); q.getOrNull() }
        }
        val bb = ByteBuffer.allocateDirect(64).also { it.put(m64).flip() }
        run("put+get 64 B, generated methods", 20_000, rounds = 3) { q, n ->
            repeat(n) { q.put(bb, FOREVER); q.get(FOREVER) }
        }
        run("one generated call (maxMessageSize function)", 50_000, rounds = 3) { _, n ->
            repeat(n) { maxMessageSize(4096UL) }
        }
        for (size in listOf(64, 4096)) {
            val batch = List(100) { bytes(size) }
            run("put+get $size B, batches of 100", 200_000) { q, n ->
                repeat(n / 100) { q.putMany(batch); q.getMany(100) }
            }
        }
        run("put+get 64 KiB, single", 20_000) { q, n ->
            val m = bytes(65536)
            repeat(n) { q.put(m); q.get() }
        }
    }
}
