// Tests of loans and views (Sources/SageQueueFFI/InPlace.swift): round trips, a throw aborts,
// loan errors, views across the ring's wrap, a view held while a producer fills the ring, the
// 64-view cap, and a detach while a loan or view is open.
import Foundation
import SageQueueFFI
import XCTest

struct Boom: Error {}

/// Fill `buf` with the bytes of `bytes(buf.count, seed:)`.
func fill(_ buf: UnsafeMutableRawBufferPointer, seed: Int) {
    for i in 0..<buf.count { buf[i] = UInt8(truncatingIfNeeded: i &* 31 &+ seed) }
}

final class InPlaceTests: XCTestCase {
    func testLoanAndViewRoundTrips() throws {
        let q = try Queue.create(qname("ipround"), capacity: 4 << 20)
        let other = try Queue.open(q.name())
        defer { q.detach(); other.detach() }
        for n in [0, 1, 7, 4096, 65_537, 1 << 20, 3] {
            // loan -> get
            let r = try q.loan(count: n) { buf -> Int in
                XCTAssertEqual(buf.count, n, "the loan's size")
                fill(buf, seed: n)
                return n * 2
            }
            XCTAssertEqual(r, n * 2, "loan returns the closure's value")
            XCTAssertEqual(try other.get(timeout: 1), bytes(n), "loan -> get, \(n) bytes")
            // put -> view
            try other.put(bytes(n, seed: n + 1))
            XCTAssertEqual(try q.view(timeout: 1) { Data($0) }, bytes(n, seed: n + 1), "put -> view, \(n) bytes")
            // loan -> view, on two handles
            try other.loan(count: n) { fill($0, seed: n + 2) }
            let same = try q.view(timeout: 1) { $0.elementsEqual(bytes(n, seed: n + 2)) }
            XCTAssertTrue(same, "loan -> view, \(n) bytes")
        }
        XCTAssertEqual(q.qsize(), 0, "qsize")
        let s = try q.stats()
        XCTAssertEqual(s.pinned, 0, "pinned after the views")
        XCTAssertEqual(s.msgsIn, 21, "msgsIn")
        // Consumers wait at an open loan: a message put after it comes after it.
        try q.loan(count: 5) { buf in
            fill(buf, seed: 50)
            try other.put(bytes(6))
            XCTAssertNil(try other.getOrNil(timeout: 0.05), "a get passed an open loan")
        }
        XCTAssertEqual(try other.get(timeout: 1), bytes(5, seed: 50), "the loan first")
        XCTAssertEqual(try other.get(timeout: 1), bytes(6), "then the message put after it")
    }

    func testAThrowAbortsTheLoanAndReleasesTheView() throws {
        let q = try Queue.create(qname("ipthrow"), capacity: 4096)
        defer { q.detach() }
        XCTAssertThrowsError(try q.loan(count: 100) { buf in fill(buf, seed: 1); throw Boom() }) {
            XCTAssertTrue($0 is Boom, "the closure's error is rethrown: \($0)")
        }
        XCTAssertEqual(q.qsize(), 0, "an aborted loan publishes nothing")
        XCTAssertNil(try q.getOrNil(timeout: 0.05), "nothing to take after an abort")
        // The room is free again: 200 aborted loans of 1000 bytes in a 4 KiB ring.
        for _ in 0..<200 {
            XCTAssertThrowsError(try q.loan(count: 1000, timeout: 0) { _ in throw Boom() }) {
                XCTAssertTrue($0 is Boom, "the room of aborted loans is free again: \($0)")
            }
        }
        try q.loan(count: 10) { fill($0, seed: 2) }
        XCTAssertEqual(try q.get(timeout: 0), bytes(10, seed: 2), "a loan after the aborts")
        // A throwing view: the message was taken and is released.
        try q.put(bytes(20))
        XCTAssertThrowsError(try q.view(timeout: 0) { _ in throw Boom() }) { XCTAssertTrue($0 is Boom) }
        XCTAssertEqual(q.qsize(), 0, "the viewed message was taken")
        XCTAssertEqual(try q.stats().pinned, 0, "released after the throw")
        XCTAssertNoThrow(try msgError(), "no error left behind")
    }

    func testLoanErrors() throws {
        let q = try Queue.create(qname("iperr"), capacity: 4096)
        defer { q.detach() }
        // A second open loan on the handle (here: nested), InvalidArgument; the first still commits.
        try q.loan(count: 8) { buf in
            fill(buf, seed: 8)
            raises("InvalidArgument", { try q.loan(count: 8) { _ in } }, isInvalidArgument)
        }
        XCTAssertEqual(try q.get(timeout: 0), bytes(8, seed: 8), "the first loan")
        // Too large for the queue: TooLarge with the sizes.
        let max = q.maxMessageSize()
        try q.loan(count: Int(max)) { fill($0, seed: 0) }
        XCTAssertEqual(try q.get(timeout: 0).count, Int(max), "the largest loan")
        let e = raises("TooLarge", { try q.loan(count: Int(max) + 1) { _ in XCTFail("ran") } }, isTooLarge)
        if case let .TooLarge(size, maxSize)? = e {
            XCTAssertEqual(size, max + 1, "TooLarge.size")
            XCTAssertEqual(maxSize, max, "TooLarge.maxSize")
        }
        raises("InvalidArgument", { try q.loan(count: -1) { _ in } }, isInvalidArgument)
        raises("InvalidArgument", { try q.loan(count: 1, timeout: .nan) { _ in } }, isInvalidArgument)
        // No room: Full, at once or after the timeout.
        while try q.offer(bytes(100)) {}
        raises("Full", { try q.loan(count: 100, timeout: 0) { _ in XCTFail("ran") } }, isFull)
        let t = seconds { raises("Full", { try q.loan(count: 100, timeout: 0.2) { _ in } }, isFull) }
        XCTAssertTrue(t >= 0.18 && t < 2, "loan(0.2) raised Full after \(t) s")
        // A loan waits for room: a thread takes one message.
        Thread { Thread.sleep(forTimeInterval: 0.1); _ = try? q.get() }.start()
        try q.loan(count: 50, timeout: 5) { fill($0, seed: 3) }
        // No loans on a queue with maxItems.
        let bounded = try Queue.create(qname("iperr-bound"), maxItems: 4)
        defer { bounded.detach() }
        raises("InvalidArgument", { try bounded.loan(count: 1) { _ in } }, isInvalidArgument)
        // Closed.
        let closed = try Queue.create(qname("iperr-closed"))
        closed.detach()
        raises("Closed", { try closed.loan(count: 1) { _ in } }, isClosed)
        raises("Closed", { try closed.view(timeout: 0) { _ in } }, isClosed)
        XCTAssertNoThrow(try msgError(), "no error left behind")
    }

    func testViewErrors() throws {
        let q = try Queue.create(qname("ipverr"))
        defer { q.detach() }
        raises("Empty", { try q.view(timeout: 0) { _ in XCTFail("ran") } }, isEmpty)
        let t = seconds { raises("Empty", { try q.view(timeout: 0.2) { _ in } }, isEmpty) }
        XCTAssertTrue(t >= 0.18 && t < 2, "view(0.2) raised Empty after \(t) s")
        raises("InvalidArgument", { try q.view(timeout: .nan) { _ in } }, isInvalidArgument)
        Thread { Thread.sleep(forTimeInterval: 0.1); try? q.put(bytes(33)) }.start()
        XCTAssertEqual(try q.view(timeout: 5) { Data($0) }, bytes(33), "a view waits for a message")
    }

    func testViewsAcrossTheRingsWrap() throws {
        // A 4 KiB ring: messages of 1-1500 bytes wrap around it hundreds of times; each is
        // written by a put or a loan and read by a view (some views nest: two at once, the
        // second often across the wrap from the first).
        let q = try Queue.create(qname("ipwrap"), capacity: 4096)
        defer { q.detach() }
        var rng = XorShift(seed: 11)
        var total = 0
        for i in 0..<600 {
            let n = Int.random(in: 1...1500, using: &rng)
            let m = Int.random(in: 0...1200, using: &rng)
            if i % 2 == 0 { try q.put(bytes(n, seed: i)) } else { try q.loan(count: n) { fill($0, seed: i) } }
            if i % 3 == 0 {
                try q.put(bytes(m, seed: -i))
                try q.view(timeout: 0) { a in
                    try q.view(timeout: 0) { b in
                        XCTAssertTrue(a.elementsEqual(bytes(n, seed: i)), "first of two views, message \(i)")
                        XCTAssertTrue(b.elementsEqual(bytes(m, seed: -i)), "second of two views, message \(i)")
                    }
                }
                total += m
            } else {
                let ok = try q.view(timeout: 0) { $0.elementsEqual(bytes(n, seed: i)) }
                XCTAssertTrue(ok, "view of message \(i) (\(n) bytes)")
            }
            total += n
        }
        XCTAssertGreaterThan(total / 4096, 100, "the ring wrapped \(total / 4096) times")
        XCTAssertEqual(q.qsize(), 0)
        XCTAssertEqual(try q.stats().pinned, 0)
    }

    func testAViewHeldWhileAProducerFillsTheRing() throws {
        let q = try Queue.create(qname("iphold"), capacity: 16384)
        let producerQ = try Queue.open(q.name())
        defer { q.detach(); producerQ.detach() }
        let first = bytes(3000, seed: 1)
        try q.put(first)
        let count = 40 // 40 x 1000 bytes: more than the ring holds
        let done = Counter()
        let prod = Thread {
            for i in 0..<count { try! producerQ.put(bytes(1000, seed: 100 + i), timeout: 30) }
            _ = done.next()
        }
        try q.view(timeout: 0) { held in
            prod.start()
            // The producer fills the ring up to the held message and waits.
            var s = try q.stats()
            let t = Date()
            while s.producersWaiting == 0 && Date().timeIntervalSince(t) < 10 {
                Thread.sleep(forTimeInterval: 0.01)
                s = try q.stats()
            }
            XCTAssertEqual(s.producersWaiting, 1, "the producer waits for room")
            XCTAssertEqual(s.pinned, 1, "pinned")
            XCTAssertEqual(s.pinnedBytes, 3000, "pinnedBytes")
            let queued = q.qsize()
            XCTAssertTrue(queued > 5 && queued < UInt64(count), "\(queued) messages fit behind the view")
            Thread.sleep(forTimeInterval: 0.2)
            XCTAssertEqual(q.qsize(), queued, "the producer put more while the view was held")
            XCTAssertEqual(done.value, 0, "the producer finished while the view was held")
            XCTAssertTrue(held.elementsEqual(first), "the held message changed under the view")
        }
        // Released: the producer goes on; every message is intact.
        for i in 0..<count {
            let m = try q.get(timeout: 30)
            XCTAssertEqual(m, bytes(1000, seed: 100 + i), "message \(i)")
        }
        while !prod.isFinished { Thread.sleep(forTimeInterval: 0.01) }
        XCTAssertEqual(done.value, 1, "the producer finished")
        XCTAssertEqual(try q.stats().pinned, 0)
    }

    func testAtMost64ViewsPerHandle() throws {
        let q = try Queue.create(qname("ip64"))
        let other = try Queue.open(q.name())
        defer { q.detach(); other.detach() }
        for i in 0..<70 { try q.put(bytes(10, seed: i)) }
        var depth = 0
        var capError: QueueError?
        func nest() throws {
            try q.view(timeout: 0) { buf in
                XCTAssertTrue(buf.elementsEqual(bytes(10, seed: depth)), "view \(depth)")
                depth += 1
                if depth < 64 {
                    try nest()
                } else {
                    XCTAssertEqual(try q.stats().pinned, 64, "pinned")
                    // The 65th view of this handle: InvalidArgument; another handle may view.
                    capError = raises("InvalidArgument", { try q.view(timeout: 0) { _ in } }, isInvalidArgument)
                    XCTAssertEqual(try other.view(timeout: 0) { Data($0) }, bytes(10, seed: 64), "another handle's view")
                }
            }
        }
        try nest()
        XCTAssertNotNil(capError, "the 65th view")
        XCTAssertEqual(try q.stats().pinned, 0, "all released")
        XCTAssertEqual(try q.view(timeout: 0) { Data($0) }, bytes(10, seed: 65), "a view after the cap")
        XCTAssertEqual(q.qsize(), 4)
        XCTAssertNoThrow(try msgError(), "no error left behind")
    }

    func testDetachWhileALoanOrViewIsOpenWaitsForIt() throws {
        for kind in ["view", "loan"] {
            let q = try Queue.create(qname("ipdetach"), capacity: 4096)
            let other = try Queue.open(q.name())
            defer { other.detach() }
            if kind == "view" { try other.put(bytes(500, seed: 9)) }
            let inside = DispatchSemaphore(value: 0)
            let go = DispatchSemaphore(value: 0)
            let finished = DispatchSemaphore(value: 0)
            final class Result: @unchecked Sendable { var ok = false }
            let result = Result()
            Thread {
                do {
                    if kind == "view" {
                        result.ok = try q.view(timeout: 1) { buf in
                            inside.signal()
                            go.wait()
                            return buf.elementsEqual(bytes(500, seed: 9))
                        }
                    } else {
                        try q.loan(count: 300) { buf in
                            inside.signal()
                            go.wait()
                            fill(buf, seed: 10)
                        }
                        result.ok = true
                    }
                } catch {
                    XCTFail("\(kind): \(error)")
                }
                finished.signal()
            }.start()
            inside.wait()
            q.detach() // waits for the closure
            XCTAssertFalse(q.isClosed(), "\(kind): detached under an open \(kind)")
            raises("Closed", { try q.view(timeout: 0) { _ in } }, isClosed)
            raises("Closed", { try q.loan(count: 1) { _ in } }, isClosed)
            // Meanwhile a producer cannot reuse the room under the closure.
            while try other.offer(bytes(200)) {}
            go.signal()
            finished.wait()
            XCTAssertTrue(result.ok, "\(kind): the bytes were intact in the closure")
            XCTAssertTrue(q.isClosed(), "\(kind): detached when the closure ended")
            if kind == "loan" {
                XCTAssertEqual(try other.get(timeout: 1), bytes(300, seed: 10), "the loan was published")
            }
            XCTAssertEqual(try other.stats().attached, 1, "\(kind): attached")
        }
    }
}
