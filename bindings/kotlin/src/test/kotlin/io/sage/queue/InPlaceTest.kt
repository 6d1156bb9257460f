// Loans and views (InPlace.kt): round trips, aborts on exceptions, loan errors, views across the
// ring's wrap, a view held while a producer fills the ring, the 64-view cap, buffers invalid
// after their block, and loans and views forgotten unclosed released by the GC.
package io.sage.queue

import io.sage.queue.TestSupport.bytes
import io.sage.queue.TestSupport.qname
import java.nio.BufferUnderflowException
import java.nio.ByteBuffer
import java.nio.ReadOnlyBufferException
import java.util.concurrent.atomic.AtomicInteger
import kotlin.concurrent.thread
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertNull
import kotlin.test.assertSame
import kotlin.test.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

@Timeout(120)
class InPlaceTest {
    private fun ByteBuffer.bytes(): ByteArray = ByteArray(remaining()).also { get(position(), it, 0, it.size) }

    @Test
    fun `loan and view round trips, sizes 0 to 1 MiB, mixed with put and get`() {
        SageQueue.create(qname("ip-rt"), capacity = 4L shl 20).use { q ->
            for (n in listOf(0, 1, 7, 4096, 65_537, 1 shl 20, 3)) {
                val m = bytes(n)
                val r = q.loan(n) { buf ->
                    assertTrue(buf.isDirect)
                    assertFalse(buf.isReadOnly)
                    assertEquals(0, buf.position())
                    assertEquals(n, buf.limit())
                    assertEquals(n, buf.capacity())
                    buf.put(m)
                    "loaned $n"
                }
                assertEquals("loaned $n", r)
                assertContentEquals(m, q.get(), "a loan of $n bytes read by get")

                q.put(m)
                val seen = q.view { buf ->
                    assertTrue(buf.isDirect)
                    assertTrue(buf.isReadOnly)
                    assertEquals(0, buf.position())
                    assertEquals(n, buf.limit())
                    buf.bytes()
                }
                assertContentEquals(m, seen, "a put of $n bytes read by view")

                q.loan(n) { it.put(m) }
                q.openView().use { v ->
                    assertEquals(n, v.size)
                    assertContentEquals(m, v.toByteArray(), "a loan of $n bytes read by a View")
                }
            }
            // The whole loan is published, whatever the buffer's position; little-endian.
            q.loan(8) { it.putInt(0x01020304) }
            assertContentEquals(byteArrayOf(4, 3, 2, 1, 0, 0, 0, 0), q.get())
            q.put(byteArrayOf(1, 0, 0, 0, 0, 0, 0, 0x10))
            assertEquals(0x1000000000000001L, q.view { it.getLong(0) })
            q.put(ByteArray(0))
            q.view { assertEquals(java.nio.ByteOrder.LITTLE_ENDIAN, it.order()) }
            assertEquals(0UL, q.qsize())
            val s = q.stats()
            assertEquals(0u, s.pinned)
            assertEquals(0UL, s.pinnedBytes)
        }
    }

    @Test
    fun `an exception in a loan's block publishes nothing and frees the room, in a view's block releases the view`() {
        SageQueue.create(qname("ip-abort"), capacity = 4096).use { q ->
            val max = q.maxMessageSize().toInt()
            val boom = IllegalStateException("boom")
            val thrown = assertFailsWith<IllegalStateException> {
                q.loan(max) { buf ->
                    buf.put(bytes(max))
                    throw boom
                }
            }
            assertSame(boom, thrown)
            assertEquals(0UL, q.qsize())
            assertNull(q.getOrNull(0.0))
            // The room was freed: the largest message fits again, twice over.
            repeat(2) {
                q.loan(max, 0.0) { it.put(bytes(max, 1)) }
                assertContentEquals(bytes(max, 1), q.get())
            }
            // Loan objects: close() without commit aborts; commit after commit fails.
            q.openLoan(10).use { it.buffer.put(bytes(10)) }
            assertEquals(0UL, q.qsize())
            val loan = q.openLoan(10)
            loan.buffer.put(bytes(10, 2))
            loan.commit()
            assertFalse(loan.isOpen)
            assertFailsWith<IllegalStateException> { loan.commit() }
            assertFailsWith<IllegalStateException> { loan.abort() }
            loan.close() // harmless
            assertContentEquals(bytes(10, 2), q.get())

            q.put(bytes(100))
            assertFailsWith<IllegalStateException> {
                q.view { throw IllegalStateException("in a view") }
            }
            assertEquals(0u, q.stats().pinned, "the view was released")
            assertEquals(0UL, q.qsize(), "and its message consumed")
        }
    }

    @Test
    fun `loan errors - a second open loan, TooLarge, maxItems, Full, a closed handle`() {
        SageQueue.create(qname("ip-err"), capacity = 4096).use { q ->
            val first = q.openLoan(100)
            assertFailsWith<QueueException.InvalidArgument> { q.openLoan(10) }
            assertFailsWith<QueueException.InvalidArgument> { q.loan(10) {} }
            // Another handle has its own loan.
            SageQueue.open(q.name()).use { other ->
                other.loan(5) { it.put(bytes(5)) }
            }
            first.abort()
            assertContentEquals(bytes(5), q.get())

            val max = q.maxMessageSize()
            val e = assertFailsWith<QueueException.TooLarge> { q.openLoan(max.toInt() + 1) }
            assertEquals(max + 1UL, e.size)
            assertEquals(max, e.maxSize)
            assertFailsWith<IllegalArgumentException> { q.openLoan(-1) }

            q.put(bytes(3000))
            val t0 = System.nanoTime()
            assertFailsWith<QueueException.Full> { q.loan(3000, 0.2) {} }
            assertTrue((System.nanoTime() - t0) / 1e9 in 0.15..5.0)
            assertFailsWith<QueueException.Full> { q.openLoan(3000, 0.0) }
        }
        SageQueue.create(qname("ip-bounded"), maxItems = 4).use { q ->
            assertFailsWith<QueueException.InvalidArgument> { q.openLoan(10) }
            q.put(bytes(10))
            q.view { assertEquals(10, it.remaining()) } // views work with maxItems
        }
        val q = SageQueue.create(qname("ip-closed"))
        q.detach()
        assertFailsWith<QueueException.Closed> { q.openLoan(10) }
        assertFailsWith<QueueException.Closed> { q.openView(0.0) }
        q.close()
    }

    @Test
    fun `a consumer waits at an open loan, then gets it before what was put after`() {
        SageQueue.create(qname("ip-order")).use { q ->
            val loan = q.openLoan(6)
            SageQueue.open(q.name()).use { other ->
                other.put("second".toByteArray())
                assertNull(other.getOrNull(0.1), "a get passed an open loan")
                loan.buffer.put("first!".toByteArray())
                loan.commit()
                assertEquals("first!", String(other.take(1.0)))
                assertEquals("second", String(other.take(1.0)))
            }
        }
    }

    @Test
    fun `views across the ring's wrap, mixed with loans, batches and gets`() {
        SageQueue.create(qname("ip-wrap"), capacity = 4096).use { q ->
            var seed = 0
            for (round in 0 until 600) {
                val n = 1 + (round * 379) % 1500
                val m = bytes(n, seed++)
                when (round % 4) {
                    0 -> q.put(m)
                    1 -> q.loan(n) { it.put(m) }
                    2 -> assertEquals(1, q.putMany(listOf(m)))
                    else -> q.put(m.copyOfRange(0, n / 2), m.copyOfRange(n / 2, n))
                }
                val back = when (round % 3) {
                    0 -> q.view { it.bytes() }
                    1 -> q.openView().use { it.toByteArray() }
                    else -> q.get()
                }
                assertContentEquals(m, back, "round $round ($n bytes)")
            }
            // Two views at once over a wrap: a message near the ring's end, then one at its start.
            q.put(bytes(2500, 1))
            q.get()
            q.put(bytes(1200, 2))
            q.put(bytes(1500, 3)) // does not fit before the end: starts at the ring's start
            q.openView().use { a ->
                q.openView().use { b ->
                    assertContentEquals(bytes(1200, 2), a.toByteArray())
                    assertContentEquals(bytes(1500, 3), b.toByteArray())
                    assertEquals(2u, q.stats().pinned)
                    assertEquals(2700UL, q.stats().pinnedBytes)
                }
            }
            assertEquals(0u, q.stats().pinned)
        }
    }

    @Test
    fun `a view held while a producer fills the ring - the producer waits, nothing is corrupted`() {
        SageQueue.create(qname("ip-hold"), capacity = 16 * 1024).use { q ->
            val first = bytes(1024, 99)
            q.put(first)
            val count = 60
            val view = q.openView()
            val put = AtomicInteger()
            val taken = ArrayList<ByteArray>()
            // Another handle produces and another consumes; the ring space from the pinned
            // message on is not reused, so the producer must stop though the consumer keeps up.
            val producer = thread {
                SageQueue.open(q.name()).use { p ->
                    for (i in 0 until count) {
                        p.put(bytes(1024, i), 60.0)
                        put.incrementAndGet()
                    }
                }
            }
            val consumer = thread {
                SageQueue.open(q.name()).use { c ->
                    repeat(count) { taken.add(c.take(60.0)) }
                }
            }
            Thread.sleep(500)
            val stuck = put.get()
            assertTrue(stuck < count, "the producer put all $count messages past a pinned view")
            Thread.sleep(300)
            assertEquals(stuck, put.get(), "the producer moved while the view was held")
            assertContentEquals(first, view.toByteArray(), "the pinned message changed")
            assertEquals(1u, q.stats().pinned)
            view.close()
            producer.join(60_000)
            consumer.join(60_000)
            assertEquals(count, put.get())
            assertEquals(count, taken.size)
            taken.forEachIndexed { i, m -> assertContentEquals(bytes(1024, i), m, "message $i") }
            println("inplace: a held view stopped the producer after $stuck of $count messages of 1 KiB (16 KiB ring)")
        }
    }

    @Test
    fun `at most 64 views per handle`() {
        SageQueue.create(qname("ip-cap"), capacity = 1L shl 20).use { q ->
            repeat(70) { q.put(bytes(10, it)) }
            val views = (0 until 64).map { q.openView(0.0) }
            assertFailsWith<QueueException.InvalidArgument> { q.openView(0.0) }
            assertFailsWith<QueueException.InvalidArgument> { q.view(0.0) {} }
            assertEquals(64u, q.stats().pinned)
            // Another handle has its own 64.
            SageQueue.open(q.name()).use { other -> other.view { assertEquals(10, it.remaining()) } }
            views[10].close()
            q.openView(0.0).use { assertContentEquals(bytes(10, 65), it.toByteArray()) }
            views.forEachIndexed { i, v -> assertContentEquals(bytes(10, i), if (i == 10) bytes(10, 10) else v.toByteArray()) }
            views.forEach { it.close() }
            views.forEach { it.close() } // idempotent
            assertEquals(0u, q.stats().pinned)
        }
    }

    @Test
    fun `buffers are unusable after their loan or view ends`() {
        SageQueue.create(qname("ip-stale")).use { q ->
            var kept: ByteBuffer? = null
            q.put(bytes(100))
            q.view { kept = it }
            val v = kept!!
            assertEquals(0, v.limit())
            assertFailsWith<IndexOutOfBoundsException> { v.get(0) }
            assertFailsWith<IndexOutOfBoundsException> { v.getLong(8) }
            assertFailsWith<BufferUnderflowException> { v.get() }
            assertFailsWith<BufferUnderflowException> { v.get(ByteArray(10)) }
            assertFailsWith<IndexOutOfBoundsException> { v.get(0, ByteArray(10)) }
            assertFailsWith<ReadOnlyBufferException> { v.put(0, 1) }

            q.loan(100) { kept = it }
            val l = kept!!
            assertFailsWith<IndexOutOfBoundsException> { l.put(0, 1) }
            assertFailsWith<java.nio.BufferOverflowException> { l.put(ByteArray(10)) }
            assertFailsWith<IndexOutOfBoundsException> { l.get(5) }
            q.get()

            q.put(bytes(100))
            val view = q.openView()
            val b = view.buffer
            view.close()
            assertFalse(view.isOpen)
            assertFailsWith<IllegalStateException> { view.buffer }
            assertFailsWith<IllegalStateException> { view.toByteArray() }
            assertFailsWith<IndexOutOfBoundsException> { b.get(0) }
            val loan = q.openLoan(10)
            val lb = loan.buffer
            loan.abort()
            assertFailsWith<IllegalStateException> { loan.buffer }
            assertFailsWith<IndexOutOfBoundsException> { lb.put(0, 1) }
        }
    }

    @Test
    fun `a loan and a view outlive close() of their handle, which detaches when they are released`() {
        SageQueue.create(qname("ip-outlive")).use { other ->
            val q = SageQueue.open(other.name())
            q.put(bytes(1000, 7))
            val view = q.openView()
            val loan = SageQueue.open(other.name()).let { h ->
                val l = h.openLoan(100)
                h.close() // the loan keeps its handle's native object: still attached
                l
            }
            q.close()
            assertFailsWith<QueueException.Closed> { q.openView(0.0) }
            assertEquals(3u, other.stats().attached, "the handles of the open view and loan detached")
            assertContentEquals(bytes(1000, 7), view.toByteArray(), "the view's bytes after close()")
            view.close()
            assertEquals(2u, other.stats().attached, "the view's handle stayed attached")
            loan.buffer.put(bytes(100, 8))
            loan.commit()
            assertEquals(1u, other.stats().attached, "the loan's handle stayed attached")
            assertContentEquals(bytes(100, 8), other.take(1.0), "the loan committed after close()")
            // detach() gives the loan up and releases the views at once.
            val h = SageQueue.open(other.name())
            h.put(bytes(10))
            val v2 = h.openView()
            val l2 = h.openLoan(10)
            h.detach()
            assertEquals(0u, other.stats().pinned)
            assertFailsWith<QueueException.Closed> { l2.commit() }
            v2.close() // quiet: released already
            h.close()
            assertEquals(1u, other.stats().attached)
            assertNull(other.getOrNull(0.1), "a loan given up by detach() was published")
        }
    }

    /** Open a view and drop it unclosed. */
    private fun forgetAView(q: SageQueue) {
        q.openView()
    }

    /** Open a loan, write it, and drop it unclosed (it stops every consumer until given up). */
    private fun forgetALoan(q: SageQueue) {
        q.openLoan(50).buffer.put(bytes(50))
    }

    @Test
    fun `views and loans never closed are released when their buffers are garbage-collected`() {
        SageQueue.create(qname("ip-gc")).use { q ->
            q.put(bytes(100))
            forgetAView(q)
            assertEquals(1u, q.stats().pinned)
            forgetALoan(q)
            assertFailsWith<QueueException.InvalidArgument> { q.openLoan(10) }
            val deadline = System.nanoTime() + 30_000_000_000L
            var freed = false
            while (!freed && System.nanoTime() < deadline) {
                System.gc()
                Thread.sleep(50)
                freed = q.stats().pinned == 0u && runCatching { q.openLoan(10).abort() }.isSuccess
            }
            assertTrue(freed, "pinned ${q.stats().pinned}; the forgotten loan was not given up")
            q.put("next".toByteArray())
            assertEquals("next", String(q.take(1.0)), "the forgotten loan published something")
        }
    }

    @Test
    fun `views and loans from several threads and handles`() {
        SageQueue.create(qname("ip-threads"), capacity = 256 * 1024).use { q ->
            val count = 4000
            val producers = (0 until 2).map { p ->
                thread {
                    SageQueue.open(q.name()).use { h ->
                        for (i in 0 until count) {
                            val m = ChildPeer.message(p, i)
                            h.loan(m.size, 60.0) { it.put(m) }
                        }
                    }
                }
            }
            val bad = AtomicInteger()
            val seen = java.util.concurrent.ConcurrentHashMap.newKeySet<Pair<Int, Int>>()
            val consumers = (0 until 2).map {
                thread {
                    SageQueue.open(q.name()).use { h ->
                        repeat(count) {
                            val m = h.view(60.0) { buf -> ByteArray(buf.remaining()).also { buf.get(it) } }
                            val tag = ChildPeer.check(m)
                            if (tag == null || !seen.add(tag)) bad.incrementAndGet()
                        }
                    }
                }
            }
            (producers + consumers).forEach { it.join(60_000) }
            assertEquals(0, bad.get())
            assertEquals(2 * count, seen.size)
        }
    }
}
