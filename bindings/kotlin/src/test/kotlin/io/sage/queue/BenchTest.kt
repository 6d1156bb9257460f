// Put+get timings per message, printed in µs. Runs only when asked:
//   mvn -q test -Dtest=BenchTest -Dsage.bench=true        (from bindings/kotlin)
// Each case warms up (the JIT, the thread's buffers) then times several rounds and prints the
// best and the median round. Nothing is asserted about the times.
package io.sage.queue

import io.sage.queue.TestSupport.bytes
import io.sage.queue.TestSupport.qname
import java.nio.ByteBuffer
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.runBlocking
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
        benchAsync()
        benchInPlace()
    }

    /** Round trips between this thread and another one: `mine` runs the round trips here, the
     * other thread answers each message on `a` with one on `b` (blocking calls). */
    private fun pingPong(label: String, rounds: Int, mine: (SageQueue, SageQueue, Int) -> Unit) {
        SageQueue.create(qname("bench-a")).use { a ->
            SageQueue.create(qname("bench-b")).use { b ->
                val stop = "stop".toByteArray()
                val other = Thread {
                    while (true) {
                        val m = a.get()
                        if (m.size == 4) break
                        b.put(m)
                    }
                }
                other.start()
                mine(a, b, rounds / 5) // warm up
                val us = (0 until 5).map {
                    val t = System.nanoTime()
                    mine(a, b, rounds)
                    (System.nanoTime() - t) / 1e3 / rounds
                }.sorted()
                a.put(stop)
                other.join()
                println("bench: %-48s best %7.3f  median %7.3f us per round trip".format(label, us.first(), us[2]))
            }
        }
    }

    private fun benchAsync() {
        val m64 = bytes(64)
        run("put + getAsync 64 B (a message there: no wait)", 200_000) { q, n ->
            runBlocking { repeat(n) { q.put(m64); q.getAsync() } }
        }
        run("putAsync + getAsync 64 B (no wait)", 200_000) { q, n ->
            runBlocking { repeat(n) { q.putAsync(m64); q.getAsync() } }
        }
        pingPong("ping-pong 64 B, both threads blocking", 20_000) { a, b, n ->
            repeat(n) { a.put(m64); b.get() }
        }
        pingPong("ping-pong 64 B, here putAsync + getAsync (waits)", 20_000) { a, b, n ->
            runBlocking { repeat(n) { a.putAsync(m64); b.getAsync() } }
        }
        pingPong("ping-pong 64 B, getAsync on Dispatchers.Default", 20_000) { a, b, n ->
            runBlocking(Dispatchers.Default) { repeat(n) { a.putAsync(m64); b.getAsync() } }
        }
    }

    private fun benchInPlace() {
        val mib = 1 shl 20
        val src = bytes(mib)
        val dst = ByteArray(mib)
        val m64 = bytes(64)
        val d64 = ByteArray(64)
        run("64 B loan { put(ByteArray) } + view { get(ByteArray) }", 100_000) { q, n ->
            repeat(n) {
                q.loan(64) { it.put(m64) }
                q.view { it.get(d64) }
            }
        }
        run("1 MiB put(ByteArray) + get()", 2_000) { q, n ->
            repeat(n) { q.put(src); q.get() }
        }
        run("1 MiB loan { put(ByteArray) } + view { get(ByteArray) }", 2_000) { q, n ->
            repeat(n) {
                q.loan(mib) { it.put(src) }
                q.view { it.get(dst) }
            }
        }
        var sink = 0L
        run("1 MiB written in place (longs) + put(ByteArray)+get()+sum", 2_000) { q, n ->
            val bb = ByteBuffer.wrap(ByteArray(mib)).order(java.nio.ByteOrder.LITTLE_ENDIAN)
            repeat(n) { i ->
                for (k in 0 until mib / 8) bb.putLong(8 * k, k.toLong() + i)
                q.put(bb.array())
                val g = ByteBuffer.wrap(q.get()).order(java.nio.ByteOrder.LITTLE_ENDIAN)
                for (k in 0 until mib / 8) sink += g.getLong(8 * k)
            }
        }
        run("1 MiB loan written in place (longs) + view summed", 2_000) { q, n ->
            repeat(n) { i ->
                q.loan(mib) { buf -> for (k in 0 until mib / 8) buf.putLong(8 * k, k.toLong() + i) }
                q.view { buf -> for (k in 0 until mib / 8) sink += buf.getLong(8 * k) }
            }
        }
        println("bench: (checksum $sink)")
    }
}
