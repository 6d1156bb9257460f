// The sage-queue example: one queue, messages one by one and in batches, timeouts, a second
// handle (here on another thread; another process opens it by name the same way), coroutines,
// and a message written and read in place (a loan and a view).
package io.sage.example

import io.sage.queue.QueueException
import io.sage.queue.SageQueue
import io.sage.queue.get
import io.sage.queue.getMany
import io.sage.queue.getOrNull
import io.sage.queue.open
import io.sage.queue.openOrCreate
import io.sage.queue.put
import io.sage.queue.putMany
import io.sage.queue.getAsync
import io.sage.queue.loan
import io.sage.queue.putAsync
import io.sage.queue.take
import io.sage.queue.view
import kotlinx.coroutines.async
import kotlinx.coroutines.runBlocking

fun main() {
    val name = "sage-queue-example-${ProcessHandle.current().pid()}"
    SageQueue.openOrCreate(name, capacity = 1L shl 20).use { q -> // use {} detaches at the end
        q.put("hello".toByteArray()) // waits for room (timeout = FOREVER)
        println("got: " + String(q.get())) // waits for a message
        println("within 0.1 s: " + q.getOrNull(0.1)) // null: nothing came
        q.putMany(listOf("a", "b", "c").map { it.toByteArray() }) // one native call
        println("batch: " + q.getMany(100, timeout = 1.0).map { String(it) }) // up to 100 in one call
        try {
            q.take(0.0) // tries once
        } catch (e: QueueException.Empty) {
            println("take(0.0) on an empty queue: QueueException.Empty")
        }

        // A producer with its own handle; an empty message says it is done.
        val producer = Thread {
            SageQueue.open(name).use { p ->
                repeat(10_000) { p.put("item $it".toByteArray()) }
                p.put(ByteArray(0))
            }
        }
        producer.start()
        var count = 0
        val t = System.nanoTime()
        while (q.get().isNotEmpty()) count++
        val ms = (System.nanoTime() - t) / 1e6
        producer.join()
        println("consumed $count messages from another handle in %.1f ms".format(ms))
        val s = q.stats()
        println("stats: msgsIn=${s.msgsIn} msgsOut=${s.msgsOut} attached=${s.attached}")

        // Coroutines: a suspended get holds no thread; a put from another coroutine wakes it.
        runBlocking {
            val waiter = async { String(q.getAsync(timeout = 5.0)) }
            q.putAsync("from a coroutine".toByteArray())
            println("getAsync: " + waiter.await())
        }
        // In place: 8 bytes written into the ring (a loan), read where they lie (a view).
        q.loan(8) { buf -> buf.putLong(0, 42L) } // published when the block returns
        println("view: " + q.view { buf -> buf.getLong(0) }) // released when the block returns
    }
}
