// Tests of Queue's async calls (Sources/SageQueueFFI/Async.swift): round trips, timeouts,
// prompt wake-ups, a cancellation storm (exactly once), 1,000 waiting tasks, closing and
// destroying while tasks wait, the AsyncSequence, and what the generated msgReadyAsync does
// with cancellation. Timings are checked only against generous bounds.
import Foundation
import SageQueueFFI
import XCTest

/// A small seeded generator (the standard library has none), so a failing storm can be rerun.
struct XorShift: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}

func u64(_ v: Int) -> Data { withUnsafeBytes(of: Int64(v).littleEndian) { Data($0) } }
func value(_ m: Data) -> Int { Int(Int64(littleEndian: m.withUnsafeBytes { $0.loadUnaligned(as: Int64.self) })) }

/// This process's CPU time (user + system), in seconds.
func processCPU() -> Double {
    var u = rusage()
    #if canImport(Glibc)
    getrusage(RUSAGE_SELF.rawValue, &u)
    #else
    getrusage(RUSAGE_SELF, &u)
    #endif
    return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
}

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

func sleep(_ seconds: Double) async throws { try await Task.sleep(nanoseconds: UInt64(seconds * 1e9)) }

/// Await `body`, which must throw the QueueError that `match` accepts.
func raisesAsync(
    _ what: String, file: StaticString = #filePath, line: UInt = #line,
    _ body: () async throws -> Void, _ match: (QueueError) -> Bool
) async {
    do {
        try await body()
    } catch let e as QueueError where match(e) {
        return
    } catch {
        XCTFail("expected \(what), got \(error)", file: file, line: line)
        return
    }
    XCTFail("expected \(what), nothing was raised", file: file, line: line)
}

/// A thread putting `count` 8-byte messages (0..<count), pausing `pause` seconds after each.
func producer(_ q: Queue, count: Int, pause: Double = 0, after delay: Double = 0) -> Thread {
    let t = Thread {
        if delay > 0 { Thread.sleep(forTimeInterval: delay) }
        for i in 0..<count {
            try! q.put(u64(i), timeout: 60)
            if pause > 0 { Thread.sleep(forTimeInterval: pause) }
        }
    }
    t.start()
    return t
}

final class AsyncTests: XCTestCase {
    func testAsyncRoundTripsEveryCall() async throws {
        let q = try Queue.create(qname("around"), capacity: 4 << 20)
        defer { q.detach() }
        for n in [0, 1, 100, 70_000, 1 << 20] {
            try await q.putAsync(bytes(n))
            let got = try await q.getAsync()
            XCTAssertEqual(got, bytes(n), "message of \(n) bytes")
        }
        try await q.putAsync([1, 2, 3], timeout: 1)
        let three = try await q.getAsync(timeout: 1)
        XCTAssertEqual(three, Data([1, 2, 3]), "[UInt8]")
        let msgs = (0..<50).map { bytes($0 * 7, seed: $0) }
        let put = try await q.putManyAsync(msgs)
        XCTAssertEqual(put, 50, "putManyAsync count")
        let empty = try await q.putManyAsync([])
        XCTAssertEqual(empty, 0, "putManyAsync of nothing")
        var got: [Data] = []
        while got.count < 50 { got += try await q.getManyAsync(maxItems: 16, timeout: 1) }
        XCTAssertEqual(got, msgs, "getManyAsync in order")
        let done = try await q.joinAsync(timeout: 0)
        XCTAssertFalse(done, "joinAsync with 56 unfinished tasks")
        try q.taskDone(count: 56)
        let joined = try await q.joinAsync(timeout: 1)
        XCTAssertTrue(joined, "joinAsync after taskDone")
        XCTAssertEqual(q.qsize(), 0, "qsize")
    }

    func testTimeoutsFire() async throws {
        let q = try Queue.create(qname("atime"), capacity: 4096)
        defer { q.detach() }
        await raisesAsync("Empty", { _ = try await q.getAsync(timeout: 0) }, isEmpty)
        var t = now()
        await raisesAsync("Empty", { _ = try await q.getAsync(timeout: 0.2) }, isEmpty)
        var took = now() - t
        XCTAssertTrue(took >= 0.18 && took < 2, "getAsync(0.2) raised Empty after \(took) s")
        t = now()
        await raisesAsync("Empty", { _ = try await q.getManyAsync(maxItems: 4, timeout: 0.2) }, isEmpty)
        took = now() - t
        XCTAssertTrue(took >= 0.18 && took < 2, "getManyAsync(0.2) raised Empty after \(took) s")
        await raisesAsync("InvalidArgument", { _ = try await q.getAsync(timeout: .nan) }, isInvalidArgument)

        while try q.offer(bytes(100)) {}
        await raisesAsync("Full", { try await q.putAsync(bytes(100), timeout: 0) }, isFull)
        t = now()
        await raisesAsync("Full", { try await q.putAsync(bytes(100), timeout: 0.2) }, isFull)
        took = now() - t
        XCTAssertTrue(took >= 0.18 && took < 2, "putAsync(0.2) raised Full after \(took) s")
        await raisesAsync("Full", { try await q.putManyAsync([bytes(100)], timeout: 0.1) }, isFull)

        t = now()
        let joined = try await q.joinAsync(timeout: 0.2)
        took = now() - t
        XCTAssertFalse(joined, "joinAsync with unfinished tasks")
        XCTAssertTrue(took >= 0.18 && took < 2, "joinAsync(0.2) answered after \(took) s")

        // maxItems: a put waits for a get.
        let bounded = try Queue.create(qname("atime-bound"), maxItems: 2)
        defer { bounded.detach() }
        try await bounded.putManyAsync([bytes(1), bytes(2)], timeout: 0)
        await raisesAsync("Full", { try await bounded.putAsync(bytes(3), timeout: 0.1) }, isFull)
        Thread { Thread.sleep(forTimeInterval: 0.1); _ = try? bounded.get() }.start()
        try await bounded.putAsync(bytes(3), timeout: 5)
        XCTAssertEqual(bounded.qsize(), 2, "qsize at the bound")
    }

    func testWaitingCallsWakePromptly() async throws {
        let q = try Queue.create(qname("awake"), capacity: 4096)
        defer { q.detach() }
        // A get woken by a put from a thread.
        _ = producer(q, count: 1, after: 0.2)
        var t = now()
        let got = try await q.getAsync(timeout: 30)
        var took = now() - t
        XCTAssertEqual(value(got), 0, "message")
        XCTAssertTrue(took >= 0.1 && took < 5, "the waiting get returned after \(took) s")
        // A put woken by a get: the ring is full.
        while try q.offer(bytes(100)) {}
        let n = q.qsize()
        Thread { Thread.sleep(forTimeInterval: 0.2); _ = try? q.get() }.start()
        t = now()
        try await q.putAsync(bytes(100), timeout: 30)
        took = now() - t
        XCTAssertTrue(took >= 0.1 && took < 5, "the waiting put returned after \(took) s")
        XCTAssertEqual(q.qsize(), n, "qsize")
        // A batch larger than the ring goes in parts while a thread takes.
        let drained = Counter()
        let stop = Counter()
        let consumer = Thread {
            while stop.value == 0 || !q.isEmpty() {
                if (try? q.get(timeout: 0.05)) != nil { _ = drained.next() }
            }
        }
        consumer.start()
        let batch = (0..<200).map { bytes(100, seed: $0) }
        let put = try await q.putManyAsync(batch, timeout: 30)
        XCTAssertEqual(put, 200, "putManyAsync put in parts")
        _ = stop.next()
        while !consumer.isFinished { try await sleep(0.01) }
        XCTAssertEqual(drained.value, Int(n) + 200, "messages taken")
        // joinAsync woken by taskDone from a thread.
        Thread { Thread.sleep(forTimeInterval: 0.2); try? q.taskDone(count: UInt64(n) + 202) }.start()
        t = now()
        let joined = try await q.joinAsync(timeout: 30)
        took = now() - t
        XCTAssertTrue(joined, "joinAsync")
        XCTAssertTrue(took >= 0.1 && took < 5, "joinAsync returned after \(took) s")
    }

    func testCancellingAWaitingTaskIsPromptAndTakesNothing() async throws {
        let q = try Queue.create(qname("acancel"))
        defer { q.detach() }
        for call in ["get", "getMany", "put", "join"] {
            if call == "put" { while try q.offer(bytes(1000)) {} }
            let task = Task { () async throws -> Void in
                switch call {
                case "get": _ = try await q.getAsync()
                case "getMany": _ = try await q.getManyAsync(maxItems: 5)
                case "put": try await q.putAsync(bytes(1000))
                default: _ = try await q.joinAsync()
                }
            }
            try await sleep(0.2)
            let t = now()
            task.cancel()
            let result = await task.result
            let took = now() - t
            if case .failure(let e) = result, e is CancellationError {} else {
                XCTFail("\(call): a cancelled wait gave \(result), not CancellationError")
            }
            XCTAssertLessThan(took, 1.0, "\(call): cancelled after \(took) s")
        }
        // A task cancelled before it runs takes nothing.
        let n = q.qsize()
        let task = Task { try await q.getAsync(timeout: 0) }
        task.cancel()
        switch await task.result {
        case .success: XCTAssertEqual(q.qsize(), n - 1, "a message returned was taken once")
        case .failure(let e):
            XCTAssertTrue(e is CancellationError, "\(e)")
            XCTAssertEqual(q.qsize(), n, "a cancelled get took a message")
        }
    }

    /// The generated msgReadyAsync does not observe task cancellation (uniffiRustCallAsync has
    /// no cancellation handler): a cancelled task waits until the native wait ends by itself.
    /// This is why Queue drives the future itself. If this test fails, UniFFI changed.
    func testTheGeneratedMsgReadyAsyncIgnoresCancellation() async throws {
        let q = try Queue.create(qname("agen"))
        defer { q.detach() }
        let t = now()
        let seen = msgLineState(id: q.id, line: 0)
        let task = Task { try await msgReadyAsync(id: q.id, line: 0, seen: seen, timeout: 0.5) }
        task.cancel()
        let ready = try await task.value
        let took = now() - t
        XCTAssertFalse(ready, "the wait timed out")
        XCTAssertGreaterThan(took, 0.4, "the generated wait ended after \(took) s: does it observe cancellation now?")
    }

    func testCancellationStormEveryMessageExactlyOnce() async throws {
        // Producer: a thread putting `count` messages into a small ring (so it runs until the
        // end), pausing now and then. Consumers: getAsync tasks started in groups of 1-8, each
        // cancelled at a random moment (before it runs, while it waits, as it completes) with
        // probability 0.85. Every message must arrive exactly once, in the surviving results.
        let count = 2000
        let cancelsWanted = 10_000
        let q = try Queue.create(qname("storm"), capacity: 4096)
        defer { q.detach() }
        var rng = XorShift(seed: 7)
        let prod = Thread {
            for i in 0..<count {
                try! q.put(u64(i), timeout: 60)
                Thread.sleep(forTimeInterval: 0.0005) // the tasks mostly find nothing: they wait
            }
        }
        prod.start()
        var got: [Int] = []
        var cancelled = 0, late = 0
        let start = now()
        while (got.count < count || cancelled < cancelsWanted) && now() - start < 120 {
            let tasks = (0..<Int.random(in: 1...8, using: &rng)).map { _ in
                Task { try await q.getAsync(timeout: 30) }
            }
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: break
            case 1: await Task.yield()
            case 2: for _ in 0..<Int.random(in: 1...20, using: &rng) { await Task.yield() }
            default: try await Task.sleep(nanoseconds: UInt64.random(in: 10_000...300_000, using: &rng))
            }
            for task in tasks where got.count >= count || Double.random(in: 0..<1, using: &rng) < 0.85 {
                task.cancel()
            }
            for task in tasks {
                if got.count >= count { task.cancel() } // nothing more will come
                switch await task.result {
                case .success(let m):
                    got.append(value(m))
                    if task.isCancelled { late += 1 }
                case .failure(let e):
                    guard e is CancellationError else {
                        let st = try q.stats()
                        XCTFail("a get failed: \(e); \(got.count) received, \(cancelled) cancelled, qsize \(q.qsize()), "
                            + "producer finished: \(prod.isFinished), consumers waiting \(st.consumersWaiting), "
                            + "after \(now() - start) s")
                        throw e
                    }
                    cancelled += 1
                }
            }
        }
        while !prod.isFinished { try await sleep(0.01) }
        XCTAssertGreaterThanOrEqual(cancelled, cancelsWanted, "cancellations")
        XCTAssertEqual(got.count, count, "messages received (\(cancelled) cancelled, \(late) returned by a cancelled task)")
        XCTAssertEqual(got.sorted(), Array(0..<count), "a message lost or received twice")
        XCTAssertEqual(q.qsize(), 0, "qsize")
        XCTAssertEqual(try q.stats().lost, 0, "lost")
        print("storm: \(count) messages, \(cancelled) cancelled, \(late) returned by a cancelled task, \(String(format: "%.1f", now() - start)) s")
    }

    func testAThousandWaitingTasksAllServedAndTheirTimeouts() async throws {
        // 1,000 tasks wait (60 s) and 50 more with a timeout of 0.3 s; then a thread puts 1,000
        // messages. Tasks do not start in a set order, so a timed task may get a message
        // before one of the 1,000: then that one is left waiting and is cancelled at the end.
        let q = try Queue.create(qname("athousand"), capacity: 1 << 20)
        defer { q.detach() }
        final class Tally: @unchecked Sendable {
            let lock = NSLock()
            var values: [Int] = []
            func add(_ v: Int) { lock.lock(); values.append(v); lock.unlock() }
            var count: Int { lock.lock(); defer { lock.unlock() }; return values.count }
        }
        let tally = Tally()
        let waiters = (0..<1000).map { _ in Task { tally.add(value(try await q.getAsync(timeout: 60))) } }
        let timed = (0..<50).map { _ in Task { tally.add(value(try await q.getAsync(timeout: 0.3))) } }
        try await sleep(0.1)
        let t = now()
        _ = producer(q, count: 1000)
        while tally.count < 1000 && now() - t < 30 { try await sleep(0.01) }
        let took = now() - t
        var empties = 0, timedServed = 0
        for w in timed {
            switch await w.result {
            case .success: timedServed += 1
            case .failure(let e):
                if let e = e as? QueueError, isEmpty(e) { empties += 1 } else { XCTFail("timed task: \(e)") }
            }
        }
        var served = 0, leftWaiting = 0
        for w in waiters {
            w.cancel()
            switch await w.result {
            case .success: served += 1
            case .failure(let e): if e is CancellationError { leftWaiting += 1 } else { XCTFail("task: \(e)") }
            }
        }
        XCTAssertEqual(tally.values.sorted(), Array(0..<1000), "every message once (qsize \(q.qsize()))")
        XCTAssertEqual(served + timedServed, 1000, "tasks served")
        XCTAssertEqual(empties + timedServed, 50, "the timed tasks")
        XCTAssertEqual(leftWaiting, timedServed, "tasks left waiting")
        XCTAssertEqual(q.qsize(), 0, "qsize")
        print("1,000 waiting tasks: all messages in \(String(format: "%.3f", took)) s; "
            + "\(timedServed) of the 50 timed tasks got one first, \(empties) timed out")
    }

    func testClosingOrDestroyingWhileTasksWaitThrowsClosedPromptly() async throws {
        for how in ["unlink by another handle", "detach of this handle"] {
            let q = try Queue.create(qname("aclose"), capacity: 4096)
            let other = try Queue.open(q.name())
            let full = try Queue.open(q.name()) // its waiting put needs a full ring
            while try full.offer(bytes(100)) {}
            try full.taskDone(count: full.qsize() - 1) // one task left: join waits
            // The put and the join wait on q (full); the gets on eq (empty).
            let waiting = how.hasPrefix("unlink") ? other : q
            let eq = try Queue.create(qname("aclose-empty"), capacity: 4096)
            let eqOther = try Queue.open(eq.name())
            let getter = how.hasPrefix("unlink") ? eq : eqOther
            var tasks: [Task<Void, Error>] = (0..<20).map { _ in Task { _ = try await getter.getAsync() } }
            tasks.append(Task { _ = try await getter.getManyAsync(maxItems: 3) })
            tasks.append(Task { for try await _ in getter.messages() {} ; throw QueueError.Closed(reason: "ended") })
            tasks.append(Task { try await waiting.putAsync(bytes(100)) })
            tasks.append(Task { _ = try await waiting.joinAsync() })
            try await sleep(0.2)
            let t = now()
            if how.hasPrefix("unlink") {
                try full.unlink()
                try eqOther.unlink()
            } else {
                waiting.detach()
                getter.detach()
            }
            var closed = 0
            for task in tasks {
                switch await task.result {
                case .success: XCTFail("\(how): a waiting call returned")
                case .failure(let e):
                    if let e = e as? QueueError, isClosed(e) { closed += 1 } else { XCTFail("\(how): \(e)") }
                }
            }
            let took = now() - t
            XCTAssertEqual(closed, tasks.count, "\(how): Closed")
            XCTAssertLessThan(took, 2.0, "\(how): the waiting tasks ended after \(took) s")
            for h in [q, other, full, eq, eqOther] { h.detach() }
        }
    }

    func testMessagesSequenceEndsWhenTheQueueIsClosed() async throws {
        let q = try Queue.create(qname("aseq"))
        let other = try Queue.open(q.name())
        defer { q.detach(); other.detach() }
        let reader = Task { () async throws -> [Int] in
            var seen: [Int] = []
            for try await m in q.messages() { seen.append(value(m)) }
            return seen
        }
        for i in 0..<100 { try await other.putAsync(u64(i)) }
        while !other.isEmpty() { try await sleep(0.01) }
        try other.unlink()
        let seen = try await reader.value
        XCTAssertEqual(seen, Array(0..<100), "the sequence")
        // With a timeout per message: Empty ends the loop with an error.
        let r = try Queue.create(qname("aseq2"))
        defer { r.detach() }
        await raisesAsync("Empty", { for try await _ in r.messages(timeout: 0.05) {} }, isEmpty)
    }

    func testWaitingAtAnOpenLoanOrBehindAViewDoesNotSpin() async throws {
        // msg_ready_async counts a message committed behind an open loan as one to take, and
        // ring space behind a pinned view as room: its wait ends at once while the try finds
        // nothing. The async calls must not spin a core meanwhile (Waiting's pauses).
        let q = try Queue.create(qname("aspin"), capacity: 16384)
        let other = try Queue.open(q.name())
        defer { q.detach(); other.detach() }
        let entered = DispatchSemaphore(value: 0)
        let ended = DispatchSemaphore(value: 0)
        // A get at an open loan, with a message put after the loan.
        Thread {
            try! other.loan(count: 8) { buf in
                entered.signal()
                Thread.sleep(forTimeInterval: 0.5)
                buf.storeBytes(of: Int64(1).littleEndian, as: Int64.self)
            }
            ended.signal()
        }.start()
        entered.wait()
        try q.put(u64(2))
        var cpu0 = processCPU()
        var t = now()
        let first = try await q.getAsync(timeout: 10)
        var took = now() - t
        var cpu = processCPU() - cpu0
        XCTAssertEqual(value(first), 1, "the loan's message first")
        let second = try await q.getAsync(timeout: 10)
        XCTAssertEqual(value(second), 2, "then the message put after it")
        XCTAssertTrue(took > 0.3 && took < 5, "the get waited \(took) s for the loan")
        XCTAssertLessThan(cpu, 0.25, "\(cpu) s of CPU while the get waited \(took) s at the loan")
        print(String(format: "a get at an open loan: %.3f s of CPU in %.3f s", cpu, took))
        ended.wait()
        // A put behind a view: the ring is full, then a message is viewed (taken and pinned).
        while try q.offer(bytes(1000)) {}
        Thread {
            try! other.view(timeout: 0) { _ in
                entered.signal()
                Thread.sleep(forTimeInterval: 0.5)
            }
            ended.signal()
        }.start()
        entered.wait()
        cpu0 = processCPU()
        t = now()
        try await q.putAsync(bytes(1000), timeout: 10)
        took = now() - t
        cpu = processCPU() - cpu0
        XCTAssertTrue(took > 0.3 && took < 5, "the put waited \(took) s for the view")
        XCTAssertLessThan(cpu, 0.25, "\(cpu) s of CPU while the put waited \(took) s behind the view")
        print(String(format: "a put behind a view: %.3f s of CPU in %.3f s", cpu, took))
        ended.wait()
    }

    func testManyQueuesAndTasksAtOnce() async throws {
        // 40 queues, 5 tasks each getting and one putting per queue: every message once.
        let queues = try (0..<40).map { try Queue.create(qname("amany\($0)"), capacity: 8192) }
        defer { for q in queues { q.detach() } }
        let per = 50
        let results = try await withThrowingTaskGroup(of: [Int].self) { group -> [[Int]] in
            for (k, q) in queues.enumerated() {
                for _ in 0..<5 {
                    group.addTask {
                        var got: [Int] = []
                        while true {
                            let m = try await q.getAsync(timeout: 30)
                            let v = value(m)
                            if v < 0 { return got }
                            got.append(v)
                        }
                    }
                }
                group.addTask {
                    for i in 0..<per { try await q.putAsync(u64(k * 1000 + i)) }
                    for _ in 0..<5 { try await q.putAsync(u64(-1)) }
                    return []
                }
            }
            var all: [[Int]] = []
            for try await r in group { all.append(r) }
            return all
        }
        let all = results.flatMap { $0 }.sorted()
        let want = (0..<40).flatMap { k in (0..<per).map { k * 1000 + $0 } }.sorted()
        XCTAssertEqual(all, want, "every message once")
    }
}
