// Tests of acknowledged gets (Sources/SageQueueFFI/Acks.swift): ack, nack and redelivery with
// the delivery count, stale receipts refused, a detached holder's message delivered again, the
// visibility timeout, dead letters after maxDeliveries, batches, the acked closures, the async
// gets, and a child process (the interop peer's hold-acked mode) killed with SIGKILL while it
// holds an unacknowledged message. Timings are checked only against generous bounds.
import Foundation
import SageQueueFFI
import XCTest

func isStale(_ e: QueueError) -> Bool { if case .StaleReceipt = e { return true }; return false }

/// The interop peer (sage-queue-interop-peer), built beside this test binary.
func peerPath() -> String {
    var dir: URL
    if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
        dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    } else {
        dir = Bundle(for: AcksTests.self).bundleURL.deletingLastPathComponent()
    }
    return dir.appendingPathComponent("sage-queue-interop-peer").path
}

/// One line of a child's output (nil when it closed its output first).
func readLine(_ h: FileHandle) -> String? {
    var got = Data()
    while true {
        let chunk = h.availableData
        if chunk.isEmpty { return got.isEmpty ? nil : String(decoding: got, as: UTF8.self) }
        got.append(chunk)
        if let nl = got.firstIndex(of: UInt8(ascii: "\n")) {
            return String(decoding: got[..<nl], as: UTF8.self)
        }
    }
}

final class AcksTests: XCTestCase {
    func testAckFreesTheMessageAndASecondAckIsRefused() throws {
        let q = try Queue.create(qname("ack"), capacity: 4096)
        defer { q.detach() }
        try q.put(Data("one".utf8))
        let m = try q.getAcked(timeout: 0)
        XCTAssertEqual(m.data, Data("one".utf8))
        XCTAssertEqual(m.deliveries, 1, "first delivery")
        var s = try q.stats()
        XCTAssertEqual(s.unacked, 1, "unacked while held")
        XCTAssertEqual(s.messages, 0, "a held message is not in the queue")
        try q.ack(m)
        s = try q.stats()
        XCTAssertEqual(s.unacked, 0, "unacked after the ack")
        raises("StaleReceipt", { try q.ack(m.receipt) }, isStale)
        raises("StaleReceipt", { try q.nack(m.receipt) }, isStale)
        raises("Empty", { _ = try q.getAcked(timeout: 0) }, isEmpty)
        raises("InvalidArgument", { try q.ack(Receipt(12345)) }, isInvalidArgument)
        // An empty message, and the error of a failed take.
        try q.put(Data())
        let e = try q.getAcked(timeout: 0)
        XCTAssertEqual(e.data, Data())
        try q.ack(e)
        q.detach()
        raises("Closed", { _ = try q.getAcked(timeout: 0) }, isClosed)
    }

    func testNackDeliversAgainWithTheCountOneHigher() throws {
        let q = try Queue.create(qname("nack"), capacity: 4096)
        defer { q.detach() }
        try q.put(Data("again".utf8))
        let first = try q.getAcked(timeout: 0)
        try q.nack(first)
        var s = try q.stats()
        XCTAssertEqual(s.redeliverable, 1, "redeliverable")
        XCTAssertEqual(q.qsize(), 1, "a returned message counts in qsize")
        let second = try q.getAcked(timeout: 0)
        XCTAssertEqual(second.data, Data("again".utf8))
        XCTAssertEqual(second.deliveries, 2, "second delivery")
        XCTAssertEqual(second.receipt.deliveries, 2)
        raises("StaleReceipt (ack of the first delivery)", { try q.ack(first) }, isStale)
        raises("StaleReceipt (nack of the first delivery)", { try q.nack(first) }, isStale)
        try q.nack(second)
        let third = try q.getAcked(timeout: 0)
        XCTAssertEqual(third.deliveries, 3, "third delivery")
        try q.ack(third)
        s = try q.stats()
        XCTAssertEqual(s.redelivered, 2, "redelivered")
        XCTAssertEqual(s.unacked, 0)
        // A plain get takes a returned message too.
        try q.put(Data("m".utf8))
        try q.nack(try q.getAcked(timeout: 0))
        XCTAssertEqual(try q.get(timeout: 0), Data("m".utf8))
        XCTAssertEqual(q.qsize(), 0)
    }

    func testADetachedHoldersMessageIsDeliveredAgain() throws {
        let q = try Queue.create(qname("detach"), capacity: 4096)
        defer { q.detach() }
        try q.put(Data("orphan".utf8))
        let holder = try Queue.open(q.name())
        let m = try holder.getAcked(timeout: 0)
        holder.detach()
        let again = try q.getAcked(timeout: 1)
        XCTAssertEqual(again.data, Data("orphan".utf8))
        XCTAssertEqual(again.deliveries, 2)
        raises("StaleReceipt", { try q.ack(m) }, isStale)
        try q.ack(again)
    }

    func testTheVisibilityTimeoutDeliversAgain() throws {
        let q = try Queue.create(qname("vis"), capacity: 4096)
        defer { q.detach() }
        try q.setAckPolicy(visibilityTimeout: 0.05)
        XCTAssertEqual(q.ackPolicy().visibilityTimeout, 0.05)
        try q.put(Data("slow".utf8))
        let first = try q.getAcked(timeout: 0)
        var second: Delivery?
        let took = try seconds { second = try q.getAcked(timeout: 10) }
        XCTAssertGreaterThanOrEqual(took, 0.04, "delivered again only after the visibility timeout")
        XCTAssertLessThan(took, 5, "delivered again soon after the visibility timeout")
        XCTAssertEqual(second?.data, Data("slow".utf8))
        XCTAssertEqual(second?.deliveries, 2)
        raises("StaleReceipt", { try q.ack(first) }, isStale)
        try q.ack(second!)
    }

    func testMaxDeliveriesDeadLettersOrDrops() throws {
        let dlqName = qname("dlq")
        let dlq = try Queue.create(dlqName, capacity: 4096)
        let q = try Queue.create(qname("poison"), capacity: 4096)
        defer { q.detach(); dlq.detach() }
        try q.setAckPolicy(maxDeliveries: 2, deadLetter: dlqName)
        let p = q.ackPolicy()
        XCTAssertEqual(p.maxDeliveries, 2)
        XCTAssertEqual(p.deadLetter, dlqName)
        try q.put(Data("poison".utf8))
        for d in 1...2 {
            let m = try q.getAcked(timeout: 0)
            XCTAssertEqual(m.deliveries, d)
            try q.nack(m)
        }
        raises("Empty", { _ = try q.getAcked(timeout: 0) }, isEmpty)
        XCTAssertEqual(try dlq.get(timeout: 1), Data("poison".utf8), "the dead-letter queue has it")
        XCTAssertEqual(try q.stats().deadLettered, 1)
        // Without a dead-letter queue: dropped and counted (the generated record, too).
        try q.setAckPolicy(AckPolicy(maxDeliveries: 1, visibilityTimeout: 0, deadLetter: nil))
        XCTAssertNil(q.ackPolicy().deadLetter)
        try q.put(Data("dropped".utf8))
        try q.nack(try q.getAcked(timeout: 0))
        raises("Empty", { _ = try q.getAcked(timeout: 0) }, isEmpty)
        XCTAssertEqual(try q.stats().ackDropped, 1)
        XCTAssertEqual(q.qsize(), 0)
        // Bad policies are refused.
        raises("InvalidArgument", { try q.setAckPolicy(visibilityTimeout: -1) }, isInvalidArgument)
        raises("InvalidArgument", { try q.setAckPolicy(visibilityTimeout: .nan) }, isInvalidArgument)
        raises("InvalidArgument", { try q.setAckPolicy(maxDeliveries: -1) }, isInvalidArgument)
        raises("a bad name", { try q.setAckPolicy(deadLetter: "bad/name") }, { _ in true })
    }

    func testBatchesWithOneAckForTheBatch() throws {
        let q = try Queue.create(qname("batch"), capacity: 65536)
        defer { q.detach() }
        for i in 0..<10 { try q.put(bytes(10, seed: i)) }
        let batch = try q.getAckedMany(maxItems: 8, timeout: 0)
        XCTAssertEqual(batch.count, 8)
        for (i, m) in batch.enumerated() {
            XCTAssertEqual(m.data, bytes(10, seed: i), "message \(i)")
            XCTAssertEqual(m.deliveries, 1)
        }
        XCTAssertEqual(Set(batch.receipts).count, 8, "one receipt each")
        XCTAssertEqual(try q.stats().unacked, 8)
        try q.ack(batch)
        XCTAssertEqual(try q.stats().unacked, 0, "one ack for the batch")
        raises("StaleReceipt (the batch acked twice)", { try q.ack(batch) }, isStale)
        // maxBytes: at least one message, then as many as fit.
        let two = try q.getAckedMany(maxItems: 8, maxBytes: 25, timeout: 0)
        XCTAssertEqual(two.messages, [bytes(10, seed: 8), bytes(10, seed: 9)])
        try q.nack(two)
        XCTAssertEqual(q.qsize(), 2)
        let again = try q.getAckedMany(maxItems: 8, timeout: 0)
        XCTAssertEqual(again.messages, [bytes(10, seed: 8), bytes(10, seed: 9)], "returned in order")
        XCTAssertEqual(again.map(\.deliveries), [2, 2])
        // A batch ack that meets a stale receipt still acks the others, then throws.
        try q.ack(again[0])
        raises("StaleReceipt", { try q.ack(again) }, isStale)
        XCTAssertEqual(try q.stats().unacked, 0, "the valid receipt was acked")
        raises("Empty", { _ = try q.getAckedMany(maxItems: 4, timeout: 0) }, isEmpty)
        raises("InvalidArgument", { _ = try q.getAckedMany(maxItems: 0, timeout: 0) }, isInvalidArgument)
        // 64 leases per queue: with every lease held an acked get finds nothing, a plain get takes.
        for i in 0..<70 { try q.put(bytes(1, seed: i)) }
        var held: [Delivery] = []
        while let m = try? q.getAcked(timeout: 0) { held.append(m) }
        XCTAssertEqual(held.count, 64)
        XCTAssertNoThrow(try q.get(timeout: 0))
        for m in held { try q.ack(m) }
        // ackedMany: acked on return, nacked on a throw.
        let n = try q.ackedMany(maxItems: 3, timeout: 0) { $0.count }
        XCTAssertEqual(n, 3)
        XCTAssertThrowsError(try q.ackedMany(maxItems: 3, timeout: 0) { _ in throw Boom() }) {
            XCTAssertTrue($0 is Boom, "the closure's error: \($0)")
        }
        XCTAssertEqual(q.qsize(), 2, "the batch was returned")
        XCTAssertEqual(try q.getAckedMany(maxItems: 3, timeout: 0).map(\.deliveries), [2, 2])
    }

    func testTheAckedClosureAcksOnReturnAndNacksOnAThrow() throws {
        let q = try Queue.create(qname("closure"), capacity: 4096)
        defer { q.detach() }
        try q.put(Data("a".utf8))
        let r = try q.acked(timeout: 0) { m -> String in
            XCTAssertEqual(m.deliveries, 1)
            return String(decoding: m.data, as: UTF8.self)
        }
        XCTAssertEqual(r, "a")
        XCTAssertEqual(try q.stats().unacked, 0, "acked on return")
        XCTAssertEqual(q.qsize(), 0)
        try q.put(Data("b".utf8))
        XCTAssertThrowsError(try q.acked(timeout: 0) { _ in throw Boom() }) {
            XCTAssertTrue($0 is Boom, "the closure's error is rethrown: \($0)")
        }
        XCTAssertEqual(try q.stats().unacked, 0)
        XCTAssertEqual(q.qsize(), 1, "nacked on a throw")
        let deliveries = try q.acked(timeout: 0) { $0.deliveries }
        XCTAssertEqual(deliveries, 2, "delivered again")
        raises("Empty", { try q.acked(timeout: 0) { _ in XCTFail("no message") } }, isEmpty)
        // A closure that outlives the visibility timeout: the ack is refused after it.
        try q.setAckPolicy(visibilityTimeout: 0.05)
        try q.put(Data("c".utf8))
        raises("StaleReceipt", {
            try q.acked(timeout: 0) { _ in
                Thread.sleep(forTimeInterval: 0.1)
                _ = try? q.getAcked(timeout: 5)  // finds it timed out: delivered again, held
            }
        }, isStale)
        XCTAssertEqual(try q.stats().unacked, 1, "the newer delivery is untouched")
    }

    func testGetAckedAsync() async throws {
        let name = qname("async")
        let q = try Queue.create(name, capacity: 4096)
        defer { q.detach() }
        // At once, and timing out.
        try q.put(Data("x".utf8))
        let m = try await q.getAckedAsync(timeout: 1)
        XCTAssertEqual(m.data, Data("x".utf8))
        XCTAssertEqual(m.deliveries, 1)
        try q.nack(m)
        let again = try await q.getAckedAsync(timeout: 1)
        XCTAssertEqual(again.deliveries, 2)
        try q.ack(again)
        await raisesAsync("Empty", { _ = try await q.getAckedAsync(timeout: 0) }, isEmpty)
        let t0 = now()
        await raisesAsync("Empty", { _ = try await q.getAckedAsync(timeout: 0.2) }, isEmpty)
        XCTAssertGreaterThanOrEqual(now() - t0, 0.15, "waited for the timeout")
        // A message put while waiting.
        let waiting = Task { try await q.getAckedAsync(timeout: 10) }
        try await sleep(0.1)
        try q.put(Data("later".utf8))
        let later = try await waiting.value
        XCTAssertEqual(later.data, Data("later".utf8))
        // A message nacked by another handle in another thread while the task waits (nothing
        // put): it wakes the task as a put does, well before the wait's 30 s. Its next delivery
        // is held under a visibility timeout (a delivery's deadline is set when taken).
        try q.setAckPolicy(visibilityTimeout: 0.2)
        let other = try Queue.open(name)
        defer { other.detach() }
        let returned = Task { try await q.getAckedAsync(timeout: 30) }
        try await sleep(0.2)
        let receipt = later.receipt
        var t = now()
        Thread {
            do { try other.nack(receipt) } catch { XCTFail("the nack in another thread: \(error)") }
        }.start()
        let second = try await returned.value
        XCTAssertLessThan(now() - t, 5, "a nack wakes an async acked get")
        XCTAssertEqual(second.data, Data("later".utf8))
        XCTAssertEqual(second.deliveries, 2)
        // The visibility timeout delivers that message again to a task waiting for it.
        t = now()
        let third = try await q.getAckedAsync(timeout: 30)
        XCTAssertLessThan(now() - t, 5, "the visibility timeout wakes an async acked get")
        XCTAssertEqual(third.data, Data("later".utf8))
        XCTAssertEqual(third.deliveries, 3)
        raises("StaleReceipt", { try q.ack(second) }, isStale)
        try q.ack(third)
        try q.setAckPolicy()
        // A batch.
        for i in 0..<3 { try q.put(bytes(5, seed: i)) }
        let batch = try await q.getAckedManyAsync(maxItems: 10, timeout: 1)
        XCTAssertEqual(batch.messages, (0..<3).map { bytes(5, seed: $0) })
        try q.ack(batch)
        // Cancelled while waiting: nothing taken.
        let cancelled = Task { try await q.getAckedAsync() }
        try await sleep(0.1)
        cancelled.cancel()
        do {
            _ = try await cancelled.value
            XCTFail("a cancelled wait returned")
        } catch {
            XCTAssertTrue(error is CancellationError, "\(error)")
        }
        XCTAssertEqual(try q.stats().unacked, 0)
        // Detached while waiting: Closed.
        let closing = Task { try await q.getAckedAsync() }
        try await sleep(0.1)
        q.detach()
        await raisesAsync("Closed", { _ = try await closing.value }, isClosed)
    }

    func testAKilledHoldersMessageIsDeliveredAgain() throws {
        let peer = peerPath()
        guard FileManager.default.isExecutableFile(atPath: peer) else {
            XCTFail("no interop peer at \(peer): build the package with bindings/swift/build.sh")
            return
        }
        let q = try Queue.create(qname("killed"), capacity: 4096)
        defer { q.detach() }
        try q.put(Data("work".utf8))
        let child = Process()
        child.executableURL = URL(fileURLWithPath: peer)
        child.arguments = ["hold-acked", q.name()]
        let input = Pipe(), output = Pipe()
        child.standardInput = input
        child.standardOutput = output
        try child.run()
        defer {
            if child.isRunning { kill(child.processIdentifier, SIGKILL) }
        }
        let said = readLine(output.fileHandleForReading)
        XCTAssertEqual(said, "{\"size\": 4, \"deliveries\": 1}", "the child holds the message")
        XCTAssertEqual(try q.stats().unacked, 1)
        XCTAssertEqual(q.qsize(), 0)
        kill(child.processIdentifier, SIGKILL)
        child.waitUntilExit()
        XCTAssertEqual(child.terminationReason, .uncaughtSignal)
        XCTAssertEqual(child.terminationStatus, SIGKILL)
        var m: Delivery?
        let took = try seconds { m = try q.getAcked(timeout: 30) }
        XCTAssertLessThan(took, 10, "delivered again after \(took) s")
        XCTAssertEqual(m?.data, Data("work".utf8))
        XCTAssertEqual(m?.deliveries, 2)
        try q.ack(m!)
        let s = try q.stats()
        XCTAssertEqual(s.unacked, 0)
        XCTAssertEqual(s.lost, 0)
        XCTAssertEqual(s.redelivered, 1)
    }
}
