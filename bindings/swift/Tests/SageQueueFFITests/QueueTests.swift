// Tests of the Swift package: the Queue conveniences over the message path, and the generated
// bindings they stand on. Run by `swift test` in bindings/swift (tests/swift/run.sh runs it in
// the Swift root). Timings are checked only against generous bounds.
import Foundation
import SageQueueFFI
import XCTest

let pid = getpid()
let serial = Counter()

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    var value: Int {
        lock.lock()
        defer { lock.unlock() }
        return n
    }

    func next() -> Int {
        lock.lock()
        defer { lock.unlock() }
        n += 1
        return n
    }
}

func qname(_ tag: String) -> String { "swift-test-\(pid)-\(tag)-\(serial.next())" }

func bytes(_ n: Int, seed: Int? = nil) -> Data {
    let s = seed ?? n
    return Data((0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ s) })
}

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let t = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
}

/// Run `body`, which must throw the QueueError that `match` accepts; returns that error.
@discardableResult
func raises(
    _ what: String, file: StaticString = #filePath, line: UInt = #line,
    _ body: () throws -> Void, _ match: (QueueError) -> Bool
) -> QueueError? {
    do {
        try body()
    } catch let e as QueueError where match(e) {
        return e
    } catch {
        XCTFail("expected \(what), got \(error)", file: file, line: line)
        return nil
    }
    XCTFail("expected \(what), nothing was raised", file: file, line: line)
    return nil
}

func isEmpty(_ e: QueueError) -> Bool { if case .Empty = e { return true }; return false }
func isFull(_ e: QueueError) -> Bool { if case .Full = e { return true }; return false }
func isClosed(_ e: QueueError) -> Bool { if case .Closed = e { return true }; return false }
func isTooLarge(_ e: QueueError) -> Bool { if case .TooLarge = e { return true }; return false }
func isInvalidArgument(_ e: QueueError) -> Bool {
    if case .InvalidArgument = e { return true }; return false
}

/// The table layout of a batch put (u32 little-endian lengths, concatenated payloads).
func table(_ messages: [Data]) -> (lengths: Data, payloads: Data) {
    var lengths = Data()
    for m in messages { withUnsafeBytes(of: UInt32(m.count).littleEndian) { lengths.append(contentsOf: $0) } }
    return (lengths, messages.reduce(Data(), +))
}

final class QueueTests: XCTestCase {
    func testPutAndGetRoundTripSizes0To1MiB() throws {
        let q = try Queue.create(qname("rt"), capacity: 4 << 20)
        defer { q.detach() }
        XCTAssertTrue(q.created(), "created() should be true for the creator")
        // 65_537 and 1 MiB are over the view buffer's first capacity (64 KiB): it moves, and
        // the smaller messages after it are read from its new place.
        for n in [0, 1, 7, 4096, 65_537, 1 << 20, 3, 70_000, 0, 64] {
            let m = bytes(n)
            try q.put(m)
            XCTAssertEqual(try q.get(), m, "message of \(n) bytes changed")
        }
        XCTAssertEqual(q.qsize(), 0, "qsize after draining")
        XCTAssertTrue(q.isEmpty(), "isEmpty after draining")
    }

    func testGeneratedPutAndGetAndOtherPutForms() throws {
        let q = try Queue.openOrCreate(qname("gen"))
        defer { q.detach() }
        try q.handle.put(data: bytes(16), timeout: 1)
        XCTAssertEqual(try q.handle.get(timeout: 1), bytes(16), "generated round trip")
        try q.put(bytes(5))
        XCTAssertEqual(try q.handle.get(timeout: 1), bytes(5), "Queue.put, generated get")
        try q.handle.put(data: bytes(6), timeout: 1)
        XCTAssertEqual(try q.get(), bytes(6), "generated put, Queue.get")
        try q.put([1, 2, 3])
        XCTAssertEqual(try q.get(), Data([1, 2, 3]), "[UInt8] round trip")
        let slice = bytes(32)[8..<20] // a Data slice whose indices do not start at 0
        try q.put(slice)
        XCTAssertEqual(try q.get(), Data(slice), "slice round trip")
        try bytes(40).withUnsafeBytes { try q.put($0) }
        XCTAssertEqual(try q.get(), bytes(40), "UnsafeRawBufferPointer round trip")
        try q.put(head: Data("head:".utf8), body: Data("body".utf8))
        XCTAssertEqual(try q.get(), Data("head:body".utf8), "head + body")
        try q.put(head: Data(), body: Data())
        XCTAssertEqual(try q.get(), Data(), "empty head + empty body")
    }

    func testFifoOrderAndQsize() throws {
        let q = try Queue.openOrCreate(qname("fifo"))
        defer { q.detach() }
        for i in 0..<100 { try q.put(Data("m\(i)".utf8)) }
        XCTAssertEqual(q.qsize(), 100, "qsize")
        for i in 0..<100 { XCTAssertEqual(String(decoding: try q.get(), as: UTF8.self), "m\(i)", "message \(i)") }
    }

    func testEmptyAtOnceWith0AfterTheTimeoutOtherwise() throws {
        let q = try Queue.openOrCreate(qname("empty"))
        defer { q.detach() }
        raises("Empty", { _ = try q.get(timeout: 0) }, isEmpty)
        let t = seconds { raises("Empty", { _ = try q.get(timeout: 0.2) }, isEmpty) }
        XCTAssertTrue(t >= 0.18 && t < 2.0, "get(0.2) raised Empty after \(t) s")
        XCTAssertNil(try q.getOrNil(), "getOrNil on an empty queue")
        XCTAssertNil(try q.getOrNil(timeout: 0.05), "getOrNil(0.05)")
        XCTAssertNil(try q.withNext(timeout: 0) { $0.count }, "withNext on an empty queue")
        raises("Empty", { _ = try q.getMany(maxItems: 10, timeout: 0) }, isEmpty)
        raises("Empty", { _ = try q.handle.get(timeout: 0) }, isEmpty)
    }

    func testFullAtOnceWith0AfterTheTimeoutOtherwise() throws {
        let q = try Queue.create(qname("full"), capacity: 4096)
        defer { q.detach() }
        XCTAssertEqual(q.capacity(), 4096, "capacity")
        var n = 0
        while try q.offer(bytes(100)) { n += 1 }
        XCTAssertGreaterThan(n, 10, "only \(n) messages of 100 bytes fit in 4096")
        raises("Full", { try q.put(bytes(100), timeout: 0) }, isFull)
        let t = seconds { raises("Full", { try q.put(bytes(100), timeout: 0.2) }, isFull) }
        XCTAssertTrue(t >= 0.18 && t < 2.0, "put(0.2) raised Full after \(t) s")
        raises("Full", { try q.putMany([bytes(100)], timeout: 0) }, isFull)
        _ = try q.get()
        try q.put(bytes(100), timeout: 0)
        XCTAssertEqual(Int(q.qsize()), n, "qsize")
    }

    func testMaxItemsBoundsTheNumberOfMessagesABlockedPutWakesOnAGet() throws {
        let q = try Queue.create(qname("bound"), maxItems: 2)
        defer { q.detach() }
        XCTAssertEqual(q.maxItems(), 2, "maxItems")
        XCTAssertEqual(try q.stats().maxItems, 2, "stats.maxItems")
        XCTAssertEqual(try q.putMany([bytes(1), bytes(2), bytes(3)], timeout: 0), 2, "put by the batch")
        XCTAssertTrue(q.isFull(), "not full at the bound")
        raises("Full", { try q.put(bytes(3), timeout: 0) }, isFull)
        let t = Thread {
            Thread.sleep(forTimeInterval: 0.1)
            _ = try? q.get()
        }
        t.start()
        let waited = try seconds { try q.put(bytes(3), timeout: 5) }
        XCTAssertTrue(waited >= 0.05 && waited < 2.0, "the blocked put waited \(waited) s")
        let b = try Queue.openOrCreate(q.name(), maxItems: 7)
        defer { b.detach() }
        XCTAssertEqual(b.maxItems(), 2, "an opened queue keeps its bound")
    }

    func testABlockedGetWakesWhenAnotherThreadPuts() throws {
        let q = try Queue.openOrCreate(qname("wake"))
        defer { q.detach() }
        let t = Thread {
            Thread.sleep(forTimeInterval: 0.1)
            try? q.put(Data("late".utf8))
        }
        t.start()
        let got = try q.getOrNil(timeout: 5)
        XCTAssertEqual(got.map { String(decoding: $0, as: UTF8.self) }, "late", "message")
    }

    func testBatchesPutManyGetManyMaxItemsAndMaxBytes() throws {
        let q = try Queue.openOrCreate(qname("batch"))
        defer { q.detach() }
        let msgs = (0..<200).map { bytes($0 * 13 % 500, seed: $0) }
        XCTAssertEqual(try q.putMany(msgs), 200, "putMany count")
        XCTAssertEqual(try q.putMany([]), 0, "putMany of nothing")
        XCTAssertEqual(q.qsize(), 200, "qsize")
        let first = try q.getMany(maxItems: 50)
        XCTAssertEqual(first.count, 50, "getMany(50) count")
        let limited = try q.getMany(maxItems: 1000, maxBytes: 1000)
        let total = limited.reduce(0) { $0 + $1.count }
        XCTAssertTrue(limited.count == 1 || (!limited.isEmpty && total <= 1000),
                      "maxBytes 1000 gave \(limited.count) messages of \(total) bytes")
        let rest = try q.getMany(maxItems: 1000, timeout: 0)
        let all = first + limited + rest
        XCTAssertEqual(all.count, 200, "messages taken")
        for i in msgs.indices where i < all.count { XCTAssertEqual(all[i], msgs[i], "message \(i) changed") }
        raises("Empty", { _ = try q.getMany(maxItems: 5, timeout: 0) }, isEmpty)
        raises("InvalidArgument", { _ = try q.getMany(maxItems: 0, timeout: 0) }, isInvalidArgument)
        // Empty messages, and a batch taken one at a time.
        XCTAssertEqual(try q.putMany([Data(), bytes(3), Data()]), 3, "empty messages in a batch")
        XCTAssertEqual(try q.getMany(maxItems: 10), [Data(), bytes(3), Data()], "empty messages taken")
    }

    func testBatchesGeneratedPutBatchGetBatchInTheTableFormat() throws {
        let q = try Queue.openOrCreate(qname("table"))
        defer { q.detach() }
        let msgs = [bytes(0), bytes(1), bytes(300)]
        let t = table(msgs)
        XCTAssertEqual(try q.handle.putBatch(lengths: t.lengths, payloads: t.payloads, timeout: 1), 3, "putBatch count")
        // A taken batch: the payloads, their u32 lengths, the u32 count.
        var expected = t.payloads + t.lengths
        withUnsafeBytes(of: UInt32(3).littleEndian) { expected.append(contentsOf: $0) }
        XCTAssertEqual(try q.handle.getBatch(maxItems: 10, maxBytes: .max, timeout: 1), expected, "getBatch")
        // A malformed table is refused whole, by the generated method and by the message path.
        let bad = Data([10, 0, 0, 0])
        raises("InvalidArgument", {
            _ = try q.handle.putBatch(lengths: bad, payloads: Data([0, 0]), timeout: 0)
        }, isInvalidArgument)
        XCTAssertEqual(msgPutBatch(id: q.id, lengths: bad, payloads: Data([0, 0]), timeout: 0), -1, "msg_put_batch")
        raises("InvalidArgument", { try msgError() }, isInvalidArgument)
        XCTAssertEqual(msgPutBatch(id: q.id, lengths: Data([1, 0, 0]), payloads: Data([0]), timeout: 0), -1)
        raises("InvalidArgument", { try msgError() }, isInvalidArgument)
        raises("InvalidArgument", { _ = try q.handle.getBatch(maxItems: 0, maxBytes: 10, timeout: 0) },
               isInvalidArgument)
        XCTAssertEqual(q.qsize(), 0, "nothing put from a malformed batch")
    }

    func testABatchThatDoesNotFitPartialCountThenFull() throws {
        let q = try Queue.create(qname("partial"), capacity: 4096)
        defer { q.detach() }
        let msgs = Array(repeating: bytes(100), count: 100)
        let n = try q.putMany(msgs, timeout: 0)
        XCTAssertTrue(n >= 1 && n < 100, "putMany put \(n) of 100")
        XCTAssertEqual(Int(q.qsize()), n, "qsize")
        raises("Full", { try q.putMany(Array(msgs[n...]), timeout: 0) }, isFull)
    }

    func testTooLargeWithSizeAndMaxSize() throws {
        let q = try Queue.create(qname("large"), capacity: 4096)
        defer { q.detach() }
        let max = q.maxMessageSize()
        XCTAssertEqual(max, maxMessageSize(capacity: 4096), "maxMessageSize agrees with the function")
        XCTAssertTrue(max >= 1 && max < 4096, "maxMessageSize \(max)")
        try q.put(bytes(Int(max)), timeout: 0)
        XCTAssertEqual(try q.get().count, Int(max), "largest message")
        let e = raises("TooLarge", { try q.put(bytes(Int(max) + 1), timeout: 0) }, isTooLarge)
        if case let .TooLarge(size, maxSize)? = e {
            XCTAssertEqual(size, max + 1, "TooLarge.size")
            XCTAssertEqual(maxSize, max, "TooLarge.maxSize")
        }
        raises("TooLarge", { try q.put(head: bytes(Int(max)), body: bytes(1), timeout: 0) }, isTooLarge)
        raises("TooLarge", { try q.putMany([bytes(1), bytes(5000)]) }, isTooLarge)
        XCTAssertEqual(q.qsize(), 0, "nothing put from a batch with a message too large")
    }

    func testBadNamesRaiseInvalidName() throws {
        let isInvalidName: (QueueError) -> Bool = { if case .InvalidName = $0 { return true }; return false }
        for bad in ["", ".hidden", "a/b", "a b", "é", String(repeating: "x", count: 201), "../etc"] {
            let e = raises("InvalidName", { _ = try Queue.openOrCreate(bad) }, isInvalidName)
            if case let .InvalidName(name, _)? = e { XCTAssertEqual(name, bad, "InvalidName.name") }
            raises("InvalidName", { try validateName(name: bad) }, isInvalidName)
        }
        try validateName(name: "ok_name-1.x")
    }

    func testNotFoundAndAlreadyExists() throws {
        let name = qname("exists")
        let notFound: (QueueError) -> Bool = { if case .NotFound = $0 { return true }; return false }
        raises("NotFound", { _ = try Queue.open(name) }, notFound)
        do {
            let q = try Queue.create(name)
            defer { q.detach() }
            let e = raises("AlreadyExists", { _ = try Queue.create(name) }) {
                if case .AlreadyExists = $0 { return true }; return false
            }
            if case let .AlreadyExists(n)? = e { XCTAssertEqual(n, name, "AlreadyExists.name") }
            let other = try Queue.open(name)
            defer { other.detach() }
            XCTAssertFalse(other.created(), "created() for an opener")
            XCTAssertNotEqual(other.id, q.id, "each handle has its own id")
            try other.put(Data("x".utf8))
            XCTAssertEqual(try q.get(), Data("x".utf8), "message through two handles")
        }
        raises("NotFound", { _ = try Queue.open(name) }, notFound) // auto_cleanup removed it
    }

    func testCloseThenEveryCallRaisesClosed() throws {
        let q = try Queue.openOrCreate(qname("closed"))
        try q.put(Data("a".utf8))
        q.detach()
        q.detach() // idempotent
        XCTAssertTrue(q.isClosed(), "isClosed after close")
        raises("Closed", { try q.put(Data("b".utf8)) }, isClosed)
        raises("Closed", { _ = try q.offer(Data("b".utf8)) }, isClosed)
        raises("Closed", { _ = try q.get(timeout: 0) }, isClosed)
        raises("Closed", { _ = try q.getOrNil() }, isClosed)
        raises("Closed", { _ = try q.withNext(timeout: 0) { $0.count } }, isClosed)
        raises("Closed", { try q.putMany([bytes(1)]) }, isClosed)
        raises("Closed", { _ = try q.getMany(maxItems: 1, timeout: 0) }, isClosed)
        raises("Closed", { _ = try q.stats() }, isClosed)
        raises("Closed", { _ = try q.handle.get(timeout: 0) }, isClosed)
        // The message path by id: FAILED, then msgError() throws the typed error, once.
        XCTAssertEqual(msgPut(id: q.id, head: Data(), body: bytes(1), timeout: 0), -1, "msg_put")
        raises("Closed", { try msgError() }, isClosed)
        XCTAssertNoThrow(try msgError(), "msgError() forgets the error it threw")
        XCTAssertEqual(msgTake(id: q.id, timeout: 0), UInt64.max - 1, "msg_take returns FAILED")
        raises("Closed", { try msgError() }, isClosed)
    }

    func testUnlinkTheOtherHandlesSeeClosed() throws {
        let name = qname("unlink")
        let a = try Queue.openOrCreate(name)
        let b = try Queue.open(name)
        XCTAssertTrue(FileManager.default.fileExists(atPath: a.path()), "segment file exists")
        try a.unlink()
        XCTAssertFalse(FileManager.default.fileExists(atPath: b.path()), "segment file removed")
        let e = raises("Closed", { try b.put(Data("x".utf8), timeout: 0) }, isClosed)
        if case let .Closed(reason)? = e { XCTAssertFalse(reason.isEmpty, "Closed.reason") }
        raises("Closed", { _ = try a.get(timeout: 0) }, isClosed)
        b.detach()
    }

    func testScopeTheLastReferenceGoingAwayDetachesTheHandle() throws {
        let name = qname("scope")
        let owner = try Queue.openOrCreate(name)
        defer { owner.detach() }
        var id: UInt64 = 0
        do {
            let q = try Queue.open(name)
            XCTAssertEqual(try owner.stats().attached, 2, "attached inside the scope")
            try q.put(Data("kept".utf8))
            id = q.id
        }
        XCTAssertEqual(try owner.stats().attached, 1, "attached after the scope")
        XCTAssertEqual(msgPut(id: id, head: Data(), body: bytes(1), timeout: 0), -1, "msg_put by a stale id")
        raises("Closed", { try msgError() }, isClosed)
        XCTAssertEqual(try owner.get(), Data("kept".utf8), "message put inside the scope")
    }

    func testAQueueAroundAGeneratedHandle() throws {
        let handle = try SageQueue.openOrCreate(
            name: qname("wrap"), capacity: 1 << 16, mode: 0o600, autoCleanup: true, maxItems: 0)
        let q = Queue(handle)
        defer { q.detach() }
        XCTAssertEqual(q.id, handle.msgId(), "the id is the handle's")
        XCTAssertEqual(Queue(handle).id, q.id, "a second wrapper has the same id")
        try q.put(bytes(9))
        XCTAssertEqual(try handle.get(timeout: 0), bytes(9), "one queue")
        XCTAssertTrue(q.description.contains(q.name()), q.description)
    }

    func testFailuresComeBackTyped() throws {
        let q = try Queue.openOrCreate(qname("typed"))
        defer { q.detach() }
        // NaN is no timeout: InvalidArgument, through each message call.
        raises("InvalidArgument", { try q.put(bytes(1), timeout: .nan) }, isInvalidArgument)
        raises("InvalidArgument", { _ = try q.get(timeout: .nan) }, isInvalidArgument)
        raises("InvalidArgument", { _ = try q.getOrNil(timeout: .nan) }, isInvalidArgument)
        raises("InvalidArgument", { try q.putMany([bytes(1)], timeout: .nan) }, isInvalidArgument)
        raises("InvalidArgument", { _ = try q.getMany(maxItems: 3, timeout: .nan) }, isInvalidArgument)
        XCTAssertNoThrow(try msgError(), "no error is left behind")
        XCTAssertEqual(q.qsize(), 0)
    }

    func testWithNextReadsTheMessageWhereItLies() throws {
        let q = try Queue.openOrCreate(qname("next"), capacity: 1 << 20)
        defer { q.detach() }
        for n in [0, 5, 100_000, 7] {
            try q.put(bytes(n))
            let got = try q.withNext(timeout: 1) { Data($0) }
            XCTAssertEqual(got, bytes(n), "withNext of \(n) bytes")
        }
    }

    func testEachThreadReadsItsOwnViewBuffer() throws {
        // Two threads take messages of growing and shrinking sizes from two queues at once;
        // each reads its own thread's view buffer (and its own record of where it is).
        let sizes = [10, 70_000, 3, 200_000, 64, 0, 131_072, 1]
        final class Errors: @unchecked Sendable {
            let lock = NSLock()
            var list: [String] = []
            func add(_ s: String) { lock.lock(); list.append(s); lock.unlock() }
        }
        let errors = Errors()
        let group = DispatchGroup()
        for t in 0..<2 {
            let q = try Queue.create(qname("view\(t)"), capacity: 4 << 20)
            // Two sets of messages per thread, taken in turn: a read from a stale place (or
            // from the other thread's buffer) would not match.
            let sets = (0..<2).map { s in sizes.enumerated().map { bytes($1, seed: 100 * t + 10 * s + $0) } }
            group.enter()
            Thread {
                defer { q.detach(); group.leave() }
                do {
                    for round in 0..<20 {
                        let msgs = sets[round % 2]
                        for m in msgs {
                            try q.put(m)
                            if try q.get() != m { errors.add("thread \(t) round \(round): \(m.count) bytes changed") }
                        }
                        try q.putMany(msgs)
                        if try q.getMany(maxItems: msgs.count) != msgs { errors.add("thread \(t) round \(round): batch changed") }
                    }
                } catch {
                    errors.add("thread \(t): \(error)")
                }
            }.start()
        }
        XCTAssertEqual(group.wait(timeout: .now() + 60), .success, "threads did not finish in 60 s")
        XCTAssertEqual(errors.list, [])
    }

    func testStatsResetStatsTaskDoneAndJoin() throws {
        let q = try Queue.openOrCreate(qname("stats"))
        defer { q.detach() }
        try q.putMany(Array(repeating: bytes(10), count: 10))
        _ = try q.getMany(maxItems: 4)
        let s = try q.stats()
        XCTAssertEqual(s.msgsIn, 10, "msgsIn")
        XCTAssertEqual(s.msgsOut, 4, "msgsOut")
        XCTAssertEqual(s.bytesIn, 100, "bytesIn")
        XCTAssertEqual(s.messages, 6, "messages")
        XCTAssertEqual(s.attached, 1, "attached")
        XCTAssertEqual(s.name, q.name(), "name")
        XCTAssertEqual(s.creatorPid, UInt32(pid), "creatorPid")
        XCTAssertEqual(s.unfinishedTasks, 10, "unfinishedTasks")
        XCTAssertFalse(try q.join(timeout: 0), "join with unfinished tasks")
        try q.taskDone(count: 9)
        try q.taskDone()
        XCTAssertTrue(try q.join(timeout: 0), "join after taskDone")
        raises("InvalidArgument", { try q.taskDone() }, isInvalidArgument)
        try q.resetStats()
        XCTAssertEqual(try q.stats().msgsIn, 0, "msgsIn after reset")
        XCTAssertTrue(try listQueues().contains { $0.name == q.name() && $0.valid }, "listQueues")
        XCTAssertTrue(q.path().hasPrefix(queueDir()), "path in queueDir")
        q.setSpinMicros(0)
        XCTAssertEqual(q.spinMicros(), 0, "spinMicros")
    }

    func testThreadsTwoProducersTwoConsumersExactlyOnce() throws {
        let q = try Queue.openOrCreate(qname("mpmc"), capacity: 64 * 1024)
        defer { q.detach() }
        let perProducer = 5000
        let total = 2 * perProducer
        final class Tally: @unchecked Sendable {
            let lock = NSLock()
            var seen = Set<UInt32>()
            var dup = 0
        }
        let tally = Tally()
        let group = DispatchGroup()
        for p in 0..<2 {
            group.enter()
            Thread {
                for i in 0..<perProducer {
                    var v = UInt32(p * perProducer + i).littleEndian
                    try! q.put(Data(bytes: &v, count: 4))
                }
                group.leave()
            }.start()
        }
        for c in 0..<2 {
            group.enter()
            Thread {
                while true {
                    let batch: [Data]
                    do {
                        // One consumer takes by the batch, the other one at a time.
                        batch = c == 0 ? try q.getMany(maxItems: 64, timeout: 0.5) : [try q.get(timeout: 0.5)]
                    } catch {
                        tally.lock.lock(); let done = tally.seen.count >= total; tally.lock.unlock()
                        if done { break } else { continue }
                    }
                    tally.lock.lock()
                    for m in batch {
                        let v = m.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
                        if !tally.seen.insert(UInt32(littleEndian: v)).inserted { tally.dup += 1 }
                    }
                    tally.lock.unlock()
                }
                group.leave()
            }.start()
        }
        XCTAssertEqual(group.wait(timeout: .now() + 60), .success, "threads did not finish in 60 s")
        XCTAssertEqual(tally.dup, 0, "duplicates")
        XCTAssertEqual(tally.seen.count, total, "distinct messages")
    }
}
