// The direct message calls (MessagePath.kt) are pinned to the generated bindings: the generated
// `external fun` signatures of the symbols they bind, how each parameter is lowered in our
// declarations, the struct layouts, the UniFFI contract version and the symbols' checksums.
// A UniFFI upgrade or a UDL change that moves any of them fails here (and at first use, with
// PinMismatch), instead of calling a native function with the wrong arguments.
package io.sage.queue

import kotlin.test.assertEquals
import kotlin.test.assertTrue
import org.junit.jupiter.api.Test

class MessagePathPinTest {
    @Test
    fun `the direct calls match the generated bindings`() {
        assertEquals(emptyList(), MessagePath.pinned())
    }

    @Test
    fun `every native function of the direct path is pinned, with its checksum`() {
        val natives = MsgNative::class.java.declaredMethods
            .filter { java.lang.reflect.Modifier.isNative(it.modifiers) }.map { it.name }.toSet()
        assertEquals(MessagePath.GENERATED.keys, natives)
        for (name in natives) {
            val checksum = name.replace("_fn_func_", "_checksum_func_")
            assertTrue(checksum in MessagePath.CHECKSUMS, "$checksum is not pinned")
        }
        assertTrue("uniffi_sage_queue_checksum_func_msg_error" in MessagePath.CHECKSUMS)
        assertTrue("uniffi_sage_queue_checksum_method_sagequeue_msg_id" in MessagePath.CHECKSUMS)
    }

    @Test
    fun `the acknowledged takes are bound directly and pinned`() {
        for (f in listOf("msg_take_acked", "msg_take_acked_batch", "msg_receipt", "msg_ack", "msg_nack")) {
            assertTrue("uniffi_sage_queue_fn_func_$f" in MessagePath.GENERATED, "$f is not pinned")
            assertTrue("uniffi_sage_queue_checksum_func_$f" in MessagePath.CHECKSUMS, "$f's checksum is not pinned")
        }
    }

    @Test
    fun `a changed generated signature is reported`() {
        val long = java.lang.Long.TYPE
        val changed = MessagePath.GENERATED.toMutableMap()
        val (params, _) = changed.getValue("uniffi_sage_queue_fn_func_msg_take")
        changed["uniffi_sage_queue_fn_func_msg_take"] = params to Integer.TYPE
        changed["uniffi_sage_queue_fn_func_msg_gone"] = listOf(long) to long
        val problems = MessagePath.pinned(generated = changed)
        assertTrue(problems.any { "generated uniffi_sage_queue_fn_func_msg_take is" in it }, "$problems")
        assertTrue(problems.any { "msg_gone is not in the generated UniffiLib" in it }, "$problems")
    }

    @Test
    fun `a changed checksum or contract version is reported`() {
        val checksums = MessagePath.CHECKSUMS.toMutableMap()
        checksums["uniffi_sage_queue_checksum_func_msg_put"] = checksums.getValue("uniffi_sage_queue_checksum_func_msg_put") xor 1
        val problems = MessagePath.pinned(checksums = checksums, contract = MessagePath.CONTRACT_VERSION + 1)
        assertTrue(problems.any { it.startsWith("uniffi_sage_queue_checksum_func_msg_put is") }, "$problems")
        assertTrue(problems.any { it.startsWith("UniFFI contract version is") }, "$problems")
        assertEquals(2, problems.size, "$problems")
    }

    @Test
    fun `the direct and the generated calls reach one copy of the library`() {
        // Each thread has its own view buffer in that library: the same address both ways.
        repeat(2) {
            val t = Thread {
                assertEquals(
                    msgViewAddress().toLong(),
                    MsgNative.uniffi_sage_queue_fn_func_msg_view_address(MessagePath.STATUS),
                )
            }
            t.start()
            t.join()
        }
    }

    @Test
    fun `the generated code passes ForeignBytes by value and the status by pointer`() {
        // The generated source as compiled: what the lowering in MsgNative stands for.
        val gen = UniffiLib::class.java.declaredMethods.first { it.name == "uniffi_sage_queue_fn_func_msg_put" }
        val fb = gen.parameterTypes[1]
        assertTrue(com.sun.jna.Structure.ByValue::class.java.isAssignableFrom(fb), "$fb")
        assertTrue(!com.sun.jna.Structure.ByValue::class.java.isAssignableFrom(gen.parameterTypes[4]))
        assertEquals(16, ForeignBytes.ByValue().size(), "ForeignBytes size")
        assertEquals(32, UniffiRustCallStatus().size(), "UniffiRustCallStatus size")
    }
}
