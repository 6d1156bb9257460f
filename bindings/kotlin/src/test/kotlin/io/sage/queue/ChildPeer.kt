// A second JVM for CrossProcessTest, AsyncTest and AcksTest: run as `java -cp <test class path>
// io.sage.queue.ChildPeer ROLE QUEUE ARGS...`. Prints one line, its report, and exits 0 (1 on a
// wrong message; the role "hold" never exits by itself).
package io.sage.queue

import java.nio.ByteBuffer
import kotlin.system.exitProcess

object ChildPeer {
    /** Message `seq` of `producer`: an 8-byte tag, then a pattern; 8 to 5007 bytes. */
    fun message(producer: Int, seq: Int): ByteArray {
        val n = 8 + (seq * 37 + producer) % 5000
        val m = ByteArray(n) { ((it * 7 + seq + producer) and 0xff).toByte() }
        ByteBuffer.wrap(m).putInt(producer).putInt(seq)
        return m
    }

    /** (producer, seq) of a message, or null if its bytes are not those of message(). */
    fun check(m: ByteArray): Pair<Int, Int>? {
        if (m.size < 8) return null
        val b = ByteBuffer.wrap(m)
        val producer = b.int
        val seq = b.int
        return if (m.contentEquals(message(producer, seq))) producer to seq else null
    }

    @JvmStatic
    fun main(args: Array<String>) {
        val (role, name) = args
        SageQueue.open(name).use { q ->
            when (role) {
                // produce PRODUCER COUNT: singles and batches mixed
                "produce" -> {
                    val producer = args[2].toInt()
                    val count = args[3].toInt()
                    var seq = 0
                    var chunk = 0
                    while (seq < count) {
                        val k = minOf(1 + chunk % 13, count - seq)
                        val msgs = (seq until seq + k).map { message(producer, it) }
                        if (chunk % 2 == 0) msgs.forEach { q.put(it, 60.0) }
                        else check(q.putMany(msgs, 60.0) == k)
                        seq += k
                        chunk++
                    }
                    println("produced $seq")
                }
                // consume PRODUCER COUNT: every message of one producer, in order
                "consume" -> {
                    val producer = args[2].toInt()
                    val count = args[3].toInt()
                    var got = 0
                    var bad = 0
                    var chunk = 0
                    while (got < count) {
                        val msgs = if (chunk++ % 2 == 0) listOf(q.take(60.0))
                        else q.getMany(minOf(17, count - got), 60.0)
                        for (m in msgs) {
                            if (check(m) != (producer to got)) bad++
                            got++
                        }
                    }
                    println("consumed $got bad $bad")
                    if (bad > 0) exitProcess(1)
                }
                // trickle PRODUCER COUNT EVERY: single puts, pausing 1 ms after every EVERY
                "trickle" -> {
                    val producer = args[2].toInt()
                    val count = args[3].toInt()
                    val every = args[4].toInt()
                    for (seq in 0 until count) {
                        q.put(message(producer, seq), 60.0)
                        if ((seq + 1) % every == 0) Thread.sleep(1)
                    }
                    println("produced $count")
                }
                // wait: print "waiting", then wait for one message and print it
                "wait" -> {
                    println("waiting")
                    System.out.flush()
                    println("got " + String(q.take(60.0)))
                }
                // hold: take one message acked, print "holding DELIVERIES VALUE", then sleep
                // (AcksTest kills it with SIGKILL)
                "hold" -> {
                    val item = q.takeAcked(60.0)
                    println("holding ${item.deliveries} " + String(item.value))
                    System.out.flush()
                    Thread.sleep(600_000)
                }
                else -> error("unknown role $role")
            }
        }
    }
}
