// Acknowledged gets (Acks.kt): ack, nack and redelivery with the delivery count, stale
// receipts refused, the visibility timeout, max deliveries and the dead-letter queue, batches,
// the acked {} block, the suspending get, a holder that closes its handle, and a holder in
// another JVM killed with SIGKILL (ChildPeer "hold") whose message is delivered again here.
package io.sage.queue

import io.sage.queue.TestSupport.jvm
import io.sage.queue.TestSupport.qname
import java.util.concurrent.TimeUnit
import kotlin.concurrent.thread
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import kotlinx.coroutines.withTimeoutOrNull
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

@Timeout(120)
class AcksTest {
    private fun secondsSince(t0: Long) = (System.nanoTime() - t0) / 1e9

    @Test
    fun `ack frees the lease and a second ack is refused`() {
        SageQueue.create(qname("ack"), capacity = 4096).use { q ->
            q.put("one".toByteArray())
            val item = q.takeAcked(0.0)
            assertEquals("one", String(item.value))
            assertEquals(1, item.deliveries)
            assertEquals(1, item.receipt.deliveries)
            assertEquals(1u, q.stats().unacked)
            assertEquals(0uL, q.stats().messages)
            q.ack(item.receipt)
            assertEquals(0u, q.stats().unacked)
            assertFailsWith<QueueException.StaleReceipt> { q.ack(item.receipt) }
            assertFailsWith<QueueException.StaleReceipt> { q.nack(item.receipt) }
            assertNull(q.getAckedOrNull())
            assertFailsWith<QueueException.Empty> { q.takeAcked(0.0) }
            assertFailsWith<QueueException.InvalidArgument> { q.ack(Receipt(12345)) }
            assertTrue(!MessagePath.statusWritten())
        }
    }

    @Test
    fun `nack delivers the message again with deliveries 2 and fences the old receipt`() {
        SageQueue.create(qname("nack"), capacity = 4096).use { q ->
            q.put("again".toByteArray())
            val (value, first) = q.takeAcked(0.0)
            assertEquals("again", String(value))
            q.nack(first)
            val s = q.stats()
            assertEquals(1u, s.redeliverable)
            assertEquals(1uL, q.qsize())
            val second = q.takeAcked(0.0)
            assertEquals("again", String(second.value))
            assertEquals(2, second.deliveries)
            assertEquals(first.lease, second.receipt.lease)
            assertFailsWith<QueueException.StaleReceipt> { q.ack(first) }
            assertFailsWith<QueueException.StaleReceipt> { q.nack(first) }
            // Three deliveries; a plain get takes a returned message too.
            q.nack(second.receipt)
            val third = q.getAcked()
            assertEquals(3, third.deliveries)
            q.nack(third.receipt)
            assertEquals("again", String(q.take(0.0)))
            assertEquals(0u, q.stats().unacked)
            assertEquals(3uL, q.stats().redelivered) // the plain get delivered it again too
        }
    }

    @Test
    fun `the generated members and these calls agree on receipts`() {
        SageQueue.create(qname("generated"), capacity = 4096).use { q ->
            q.put("a".toByteArray())
            val m = q.getAcked(0.0) // the generated member: AckedMessage, receipt a ULong
            val r = Receipt(m.receipt.toLong())
            assertEquals(m.deliveries.toInt(), r.deliveries)
            q.nack(r)
            val again = q.takeAcked(0.0)
            assertEquals(2, again.deliveries)
            assertFailsWith<QueueException.StaleReceipt> { q.ack(m.receipt) }
            q.ack(again.receipt.packed.toULong()) // the generated ack
            assertEquals(0u, q.stats().unacked)
        }
    }

    @Test
    fun `another handle of the queue, here or in another thread, may ack a receipt`() {
        val name = qname("other")
        SageQueue.create(name, capacity = 4096).use { q ->
            SageQueue.open(name).use { other ->
                q.put("x".toByteArray())
                val item = q.takeAcked(0.0)
                thread { other.ack(item.receipt) }.join()
                assertEquals(0u, q.stats().unacked)
                assertFailsWith<QueueException.StaleReceipt> { q.ack(item.receipt) }
            }
        }
    }

    @Test
    fun `the visibility timeout delivers a held message again`() {
        SageQueue.create(qname("vis"), capacity = 4096).use { q ->
            q.setAckPolicy(visibilityTimeout = 0.05)
            assertEquals(0.05, q.ackPolicy().visibilityTimeout)
            q.put("slow".toByteArray())
            val first = q.takeAcked(0.0)
            val t0 = System.nanoTime()
            val second = q.takeAcked(5.0)
            assertTrue(secondsSince(t0) >= 0.04, "delivered again after ${secondsSince(t0)} s")
            assertEquals("slow", String(second.value))
            assertEquals(2, second.deliveries)
            assertFailsWith<QueueException.StaleReceipt> { q.ack(first.receipt) }
            q.ack(second.receipt)
            assertEquals(0u, q.stats().unacked)
        }
    }

    @Test
    fun `after max deliveries a message goes to the dead-letter queue, or is dropped`() {
        val dlqName = qname("dlq")
        SageQueue.create(dlqName, capacity = 4096).use { dlq ->
            SageQueue.create(qname("poison"), capacity = 4096).use { q ->
                q.setAckPolicy(maxDeliveries = 2, deadLetter = dlqName)
                val p = q.ackPolicy()
                assertEquals(2u, p.maxDeliveries)
                assertEquals(dlqName, p.deadLetter)
                q.put("poison".toByteArray())
                for (d in 1..2) {
                    val item = q.takeAcked(0.0)
                    assertEquals(d, item.deliveries)
                    q.nack(item.receipt)
                }
                assertNull(q.getAckedOrNull())
                assertEquals("poison", String(dlq.take(0.0)))
                assertEquals(1uL, q.stats().deadLettered)
                // Without a dead-letter queue: dropped and counted.
                q.setAckPolicy(maxDeliveries = 1)
                q.put("dropped".toByteArray())
                q.nack(q.takeAcked(0.0).receipt)
                assertNull(q.getAckedOrNull())
                assertEquals(1uL, q.stats().ackDropped)
                // Bad policies are refused.
                assertFailsWith<QueueException.InvalidArgument> { q.setAckPolicy(visibilityTimeout = -1.0) }
                assertFailsWith<QueueException.InvalidArgument> { q.setAckPolicy(visibilityTimeout = Double.NaN) }
                assertFailsWith<QueueException> { q.setAckPolicy(deadLetter = "bad/name") }
                assertFailsWith<IllegalArgumentException> { q.setAckPolicy(maxDeliveries = -1) }
                q.setAckPolicy()
                assertEquals(AckPolicy(0u, 0.0, null), q.ackPolicy())
            }
        }
    }

    @Test
    fun `batches take one lease per message and one ack settles them`() {
        SageQueue.create(qname("batch"), capacity = 65536).use { q ->
            for (i in 0 until 10) q.put(ByteArray(10) { i.toByte() })
            val batch = q.getAckedBatch(8, 0.0)
            assertEquals(8, batch.size)
            batch.forEachIndexed { i, item ->
                assertContentEquals(ByteArray(10) { i.toByte() }, item.value)
                assertEquals(1, item.deliveries)
            }
            assertEquals(batch.receipts, batch.map { it.receipt })
            assertEquals(8, batch.receipts.map { it.lease }.toSet().size)
            assertEquals(8u, q.stats().unacked)
            q.ack(batch)
            assertEquals(0u, q.stats().unacked)
            // A second ack of the batch: every receipt is stale, the first error thrown with
            // the other seven suppressed in it.
            val e = assertFailsWith<QueueException.StaleReceipt> { q.ack(batch) }
            assertEquals(7, e.suppressed.size)
            val rest = q.getAckedBatch(8, 0.0)
            assertEquals(listOf(1, 1), rest.map { it.deliveries })
            q.nack(rest)
            // maxBytes: at least one message, then only whole ones that fit.
            val one = q.getAckedBatch(2, 0.0, maxBytes = 5)
            assertEquals(listOf(2), one.map { it.deliveries })
            q.ack(one)
            val last = q.getAckedBatch(8, 0.0)
            assertEquals(listOf(2), last.map { it.deliveries })
            q.ack(last)
            assertEquals(setOf(8, 9), (one + last).map { it.value[0].toInt() }.toSet())
            assertFailsWith<QueueException.Empty> { q.getAckedBatch(8, 0.0) }
            assertFailsWith<IllegalArgumentException> { q.getAckedBatch(0, 0.0) }
            // Every lease held: an acked get finds nothing, a plain get still takes.
            for (i in 0 until 70) q.put(byteArrayOf(i.toByte()))
            val held = ArrayList<AckedItem>()
            while (true) held.add(q.getAckedOrNull() ?: break)
            assertEquals(64, held.size)
            assertNotNull(q.getOrNull())
            held.forEach { q.ack(it.receipt) }
            assertEquals(5, q.getAckedBatch(64, 0.0).also { q.ack(it) }.size)
        }
    }

    @Test
    fun `the acked block acks on return and nacks on an exception`() {
        SageQueue.create(qname("block"), capacity = 4096).use { q ->
            q.put("job".toByteArray())
            class Boom : RuntimeException("boom")
            assertFailsWith<Boom> {
                q.acked(0.0) { item ->
                    assertEquals(1, item.deliveries)
                    throw Boom()
                }
            }
            assertEquals(0u, q.stats().unacked)
            assertEquals(1uL, q.qsize())
            val r = q.acked(0.0) { item ->
                assertEquals(2, item.deliveries)
                String(item.value) + " done"
            }
            assertEquals("job done", r)
            assertEquals(0u, q.stats().unacked)
            assertEquals(0uL, q.qsize())
            assertFailsWith<QueueException.Empty> { q.acked(0.0) { } }
            // A block that outlives the visibility timeout: the ack is refused (and the message
            // was delivered again meanwhile).
            q.setAckPolicy(visibilityTimeout = 0.05)
            q.put("late".toByteArray())
            assertFailsWith<QueueException.StaleReceipt> {
                q.acked(0.0) {
                    val again = q.takeAcked(5.0)
                    assertEquals(2, again.deliveries)
                    q.ack(again.receipt)
                }
            }
        }
    }

    @Test
    fun `the suspending get waits for a message, then for one delivered again`() = runBlocking {
        val name = qname("async")
        SageQueue.create(name, capacity = 4096).use { q ->
            assertFailsWith<QueueException.Empty> { q.getAckedAsync(0.0) }
            var t0 = System.nanoTime()
            assertFailsWith<QueueException.Empty> { q.getAckedAsync(0.1) }
            assertTrue(secondsSince(t0) >= 0.09)
            // A put in another thread wakes it.
            val waiting = async(Dispatchers.Default) { q.getAckedAsync(30.0) }
            delay(100)
            q.put("later".toByteArray())
            val item = waiting.await()
            assertEquals("later", String(item.value))
            assertEquals(1, item.deliveries)
            // A nack by another handle in another thread (no message put) wakes it as a put
            // does: well before the wait's 30 s.
            SageQueue.open(name).use { other ->
                val again = async(Dispatchers.Default) { other.getAckedAsync(30.0) }
                delay(100)
                assertTrue(again.isActive, "the acked get did not wait")
                t0 = System.nanoTime()
                withContext(Dispatchers.IO) { q.nack(item.receipt) }
                val second = again.await()
                assertTrue(secondsSince(t0) < 5.0, "woken after ${secondsSince(t0)} s")
                assertEquals("later", String(second.value))
                assertEquals(2, second.deliveries)
                other.ack(second.receipt)
            }
            // So does a visibility timeout while it waits: the held message is delivered again
            // to the waiting get.
            q.setAckPolicy(visibilityTimeout = 0.2)
            q.put("timed".toByteArray())
            val first = q.getAckedAsync(0.0)
            t0 = System.nanoTime()
            val third = q.getAckedAsync(30.0)
            val took = secondsSince(t0)
            assertTrue(took >= 0.1 && took < 5.0, "delivered again after $took s")
            assertEquals("timed", String(third.value))
            assertEquals(2, third.deliveries)
            q.ack(third.receipt)
            assertFailsWith<QueueException.StaleReceipt> { q.ack(first.receipt) }
            // A cancelled wait has taken nothing.
            q.setAckPolicy()
            assertNull(withTimeoutOrNull(100) { q.getAckedAsync() })
            q.put("kept".toByteArray())
            val kept = q.takeAcked(0.0)
            assertEquals(1, kept.deliveries)
            q.ack(kept.receipt)
            assertEquals(0u, q.stats().unacked)
        }
    }

    @Test
    fun `closing a holder's handle delivers its message again`() {
        val name = qname("close")
        SageQueue.create(name, capacity = 4096).use { q ->
            q.put("orphan".toByteArray())
            val holder = SageQueue.open(name)
            val item = holder.takeAcked(0.0)
            holder.close()
            val again = q.takeAcked(5.0)
            assertEquals("orphan", String(again.value))
            assertEquals(2, again.deliveries)
            assertFailsWith<QueueException.StaleReceipt> { q.ack(item.receipt) }
            q.ack(again.receipt)
            assertFailsWith<QueueException.Closed> { holder.ack(again.receipt) }
        }
    }

    @Test
    fun `a holder in another JVM killed with SIGKILL - its message is delivered again here`() {
        SageQueue.create(qname("kill"), capacity = 4096).use { q ->
            q.put("work".toByteArray())
            val child = jvm("io.sage.queue.ChildPeer", "hold", q.name())
            try {
                assertEquals("holding 1 work", child.inputStream.bufferedReader().readLine())
                assertEquals(1u, q.stats().unacked)
                assertNull(q.getAckedOrNull(), "the held message was delivered twice")
                child.destroyForcibly() // SIGKILL
                assertTrue(child.waitFor(30, TimeUnit.SECONDS), "the child did not die")
                assertEquals(137, child.exitValue())
                val t0 = System.nanoTime()
                val item = q.takeAcked(30.0)
                val took = secondsSince(t0)
                assertEquals("work", String(item.value))
                assertEquals(2, item.deliveries)
                assertTrue(took < 10.0, "delivered again after $took s")
                println("acks: a SIGKILLed holder's message delivered again after ${"%.3f".format(took)} s")
                q.ack(item.receipt)
                val s = q.stats()
                assertEquals(0u, s.unacked)
                assertEquals(0uL, s.lost)
                assertEquals(1uL, s.redelivered)
            } finally {
                child.destroyForcibly()
            }
        }
    }
}
