// The Kotlin peer of the interop test (tests/interop/run.py): the same roles and messages as
// peer.py (see there), two in place: produce-loan (each message written straight into a
// loan) and consume-view (each message checked where it lies in the ring, as a view), and
// hold-acked (take one message with an acknowledged get, report it, and wait, never acking
// it, until the runner kills the process). Built
// against the installed io.sage:sage-queue by bindings/kotlin/interop-peer/pom.xml
// (tests/interop/run.sh does it).
import io.sage.queue.*
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.util.zip.CRC32
import kotlin.system.exitProcess

val SIZES = mapOf(
    "all" to listOf(0, 1, 7, 11, 12, 13, 64, 100, 1000, 4096, 4097, 65536, 100000, 1 shl 20),
    "tagged" to listOf(12, 13, 64, 100, 1000, 4096, 65536, 262144),
)
val STOP = "STOP".toByteArray()
const val WAIT = 60.0

fun sizeOf(seq: Int, sizes: String): Int = SIZES.getValue(sizes).let { it[(seq * 5) % it.size] }

fun crc(b: ByteArray, n: Int): Int = CRC32().also { it.update(b, 0, n) }.value.toInt()

fun message(producer: Int, seq: Int, n: Int): ByteArray {
    val k = (seq + producer * 7) and 0xff
    val m = ByteArray(n) { ((it * 31 + k) and 0xff).toByte() }
    if (n < 12) return m
    val b = ByteBuffer.wrap(m).order(ByteOrder.LITTLE_ENDIAN)
    b.putLong(0, (producer.toLong() shl 32) or seq.toLong())
    b.putInt(n - 4, crc(m, n - 4))
    return m
}

/** (producer, seq) of a tagged message, or null if its checksum or bytes are wrong. */
fun checkTagged(m: ByteArray): Pair<Int, Int>? {
    if (m.size < 12) return null
    val b = ByteBuffer.wrap(m).order(ByteOrder.LITTLE_ENDIAN)
    val tag = b.getLong(0)
    val producer = (tag ushr 32).toInt()
    val seq = (tag and 0xffffffffL).toInt()
    if (b.getInt(m.size - 4) != crc(m, m.size - 4)) return null
    if (!m.contentEquals(message(producer, seq, m.size))) return null
    return producer to seq
}

fun produce(q: SageQueue, producer: Int, count: Int, sizes: String): String {
    var seq = 0
    var chunk = 0
    var bytes = 0L
    while (seq < count) {
        val k = minOf(1 + chunk % 17, count - seq)
        val msgs = (seq until seq + k).map { message(producer, it, sizeOf(it, sizes)) }
        if (chunk % 2 == 0) msgs.forEach { q.put(it, WAIT) } else check(q.putMany(msgs, WAIT) == k)
        bytes += msgs.sumOf { it.size.toLong() }
        seq += k
        chunk++
    }
    return """{"count": $seq, "bytes": $bytes}"""
}

fun consume(q: SageQueue, producer: Int, count: Int, sizes: String): String {
    var got = 0
    var bytes = 0L
    var chunk = 0
    val bad = ArrayList<Int>()
    while (got < count) {
        val msgs = if (chunk % 2 == 0) listOf(q.take(WAIT))
        else q.getMany(minOf(1 + chunk % 23, count - got), WAIT)
        for (m in msgs) {
            val ok = m.contentEquals(message(producer, got, sizeOf(got, sizes))) &&
                (m.size < 12 || checkTagged(m) == (producer to got))
            if (!ok) bad.add(got)
            got++
            bytes += m.size
        }
        chunk++
    }
    return """{"count": $got, "bytes": $bytes, "bad": ${bad.joinToString(",", "[", "]")}}"""
}

/** Write message `seq` of `producer` (the bytes of message()) straight into `buf`. */
fun writeMessage(buf: ByteBuffer, producer: Int, seq: Int, n: Int) {
    val k = (seq + producer * 7) and 0xff
    for (i in 0 until n) buf.put(i, ((i * 31 + k) and 0xff).toByte())
    if (n < 12) return
    buf.order(ByteOrder.LITTLE_ENDIAN).putLong(0, (producer.toLong() shl 32) or seq.toLong())
    val crc = CRC32().also { it.update(buf.duplicate().position(0).limit(n - 4)) }
    buf.putInt(n - 4, crc.value.toInt())
}

/** Every message written in place with a loan (no ByteArray in between). */
fun produceLoans(q: SageQueue, producer: Int, count: Int, sizes: String): String {
    var bytes = 0L
    for (seq in 0 until count) {
        val n = sizeOf(seq, sizes)
        q.loan(n, WAIT) { buf -> writeMessage(buf, producer, seq, n) }
        bytes += n
    }
    return """{"count": $count, "bytes": $bytes}"""
}

/** Every message read in place as a view: its bytes and checksum checked in the ring. */
fun consumeViews(q: SageQueue, producer: Int, count: Int, sizes: String): String {
    var bytes = 0L
    val bad = ArrayList<Int>()
    for (seq in 0 until count) {
        val want = message(producer, seq, sizeOf(seq, sizes))
        val ok = q.view(WAIT) { buf ->
            bytes += buf.remaining()
            buf.remaining() == want.size && buf.mismatch(ByteBuffer.wrap(want)) == -1 &&
                (want.size < 12 || CRC32().also { it.update(buf.duplicate().limit(want.size - 4)) }.value.toInt() ==
                    buf.order(ByteOrder.LITTLE_ENDIAN).getInt(want.size - 4))
        }
        if (!ok) bad.add(seq)
    }
    return """{"count": $count, "bytes": $bytes, "bad": ${bad.joinToString(",", "[", "]")}}"""
}

fun drain(q: SageQueue): String {
    val tags = ArrayList<Long>()
    var bytes = 0L
    var bad = 0
    var chunk = 0
    while (true) {
        val msgs = if (chunk % 2 == 0) listOf(q.take(WAIT)) else q.getMany(1 + chunk % 23, WAIT)
        chunk++
        var stops = 0
        for (m in msgs) {
            if (m.contentEquals(STOP)) { stops++; continue }
            val t = checkTagged(m)
            if (t == null) bad++ else tags.add((t.first.toLong() shl 32) or t.second.toLong())
            bytes += m.size
        }
        if (stops > 0) {
            repeat(stops - 1) { q.put(STOP) } // a batch took another consumer's STOP: put it back
            return """{"count": ${tags.size + bad}, "bytes": $bytes, "bad": $bad, "tags": ${tags.joinToString(",", "[", "]")}}"""
        }
    }
}

/** Take one message with an acknowledged get, print {"deliveries", "bytes", "tag"} and wait
 * without acking it: the runner kills this process (SIGKILL) mid-item. */
fun holdAcked(q: SageQueue) {
    val item = q.takeAcked(WAIT)
    val tag = checkTagged(item.value)?.let { (p, s) -> "[$p, $s]" } ?: "null"
    println("""{"deliveries": ${item.deliveries}, "bytes": ${item.value.size}, "tag": $tag}""")
    System.out.flush()
    Thread.sleep(600_000)
}

fun statsOf(q: SageQueue): String {
    val s = q.stats()
    fun str(v: String) = "\"" + v.replace("\\", "\\\\").replace("\"", "\\\"") + "\""
    return """{"name": ${str(s.name)}, "path": ${str(s.path)}, "capacity": ${s.capacity}, """ +
        """"max_message_size": ${s.maxMessageSize}, "used_bytes": ${s.usedBytes}, """ +
        """"messages": ${s.messages}, "attached": ${s.attached}, "msgs_in": ${s.msgsIn}, """ +
        """"msgs_out": ${s.msgsOut}, "bytes_in": ${s.bytesIn}, "bytes_out": ${s.bytesOut}, """ +
        """"creator_pid": ${s.creatorPid}, "qsize": ${q.qsize()}}"""
}

fun inspect(q: SageQueue) {
    println("ready")
    while (true) {
        val cmd = (readLine() ?: return).trim().split(" ")
        when (cmd[0]) {
            "stats" -> println(statsOf(q))
            "get" -> println(q.take(WAIT).size)
            "put" -> { repeat(cmd[1].toInt()) { q.put(message(2, it, 100), WAIT) }; println("done") }
        }
    }
}

fun main(args: Array<String>) {
    val role = args[0]
    val q = SageQueue.open(args[1])
    val out = try {
        when (role) {
            "produce" -> produce(q, args[2].toInt(), args[3].toInt(), args[4])
            "consume" -> consume(q, args[2].toInt(), args[3].toInt(), args[4])
            "drain" -> drain(q)
            "produce-loan" -> produceLoans(q, args[2].toInt(), args[3].toInt(), args[4])
            "consume-view" -> consumeViews(q, args[2].toInt(), args[3].toInt(), args[4])
            "inspect" -> { inspect(q); null }
            "hold-acked" -> { holdAcked(q); null }
            else -> error("unknown role $role")
        }
    } catch (e: QueueException.Empty) {
        println("""{"error": "timed out waiting for a message"}""")
        exitProcess(1)
    } finally {
        q.close()
    }
    if (out != null) println(out)
}
