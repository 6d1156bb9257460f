package io.sage.queue

/** Helpers shared by the tests. */
object TestSupport {
    val pid: Long = ProcessHandle.current().pid()
    private val serial = java.util.concurrent.atomic.AtomicInteger()

    /** A queue name unique to this process and call. */
    fun qname(tag: String): String = "kt-test-$pid-$tag-${serial.getAndIncrement()}"

    /** `n` bytes of a pattern that depends on `seed`. */
    fun bytes(n: Int, seed: Int = n): ByteArray = ByteArray(n) { ((it * 31 + seed) and 0xff).toByte() }

    /** Seconds `block` took. */
    fun seconds(block: () -> Unit): Double {
        val t = System.nanoTime()
        block()
        return (System.nanoTime() - t) / 1e9
    }

    /** A new JVM running `mainClass` of the test class path with `args` (stderr to ours). */
    fun jvm(mainClass: String, vararg args: String): Process {
        val java = ProcessHandle.current().info().command()
            .orElse(System.getProperty("java.home") + "/bin/java")
        val cmd = listOf(java, "-cp", System.getProperty("java.class.path"), mainClass) + args
        return ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.INHERIT).start()
    }
}
