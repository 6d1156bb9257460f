// Tests of the Swift package (generated bindings + Conveniences.swift). Plain assertions, no
// test framework: run by tests/swift/run.sh inside the Swift root. Ends with
// "N passed, M failed"; exits 1 if any test failed. `--bench` also measures put+get.
import Foundation
import SageQueueFFI

struct TestFailure: Error, CustomStringConvertible {
    let description: String
}

func check(_ cond: Bool, _ what: @autoclosure () -> String) throws {
    if !cond { throw TestFailure(description: what()) }
}

func checkEq<T: Equatable>(_ actual: T, _ expected: T, _ what: String = "value") throws {
    if actual != expected { throw TestFailure(description: "\(what): expected \(expected), got \(actual)") }
}

/// Run `body`, which must throw an error that `match` accepts; returns that error.
@discardableResult
func raises(_ what: String, _ body: () throws -> Void, _ match: (Error) -> Bool) throws -> Error {
    do {
        try body()
    } catch {
        if match(error) { return error }
        throw TestFailure(description: "expected \(what), got \(error)")
    }
    throw TestFailure(description: "expected \(what), nothing was raised")
}

func isEmpty(_ e: Error) -> Bool { if case QueueError.Empty = e { return true }; return false }
func isFull(_ e: Error) -> Bool { if case QueueError.Full = e { return true }; return false }
func isClosed(_ e: Error) -> Bool { if case QueueError.Closed = e { return true }; return false }
func isInvalidArgument(_ e: Error) -> Bool {
    if case QueueError.InvalidArgument = e { return true }; return false
}

let pid = getpid()
var serial = 0
func qname(_ tag: String) -> String {
    serial += 1
    return "swift-test-\(pid)-\(tag)-\(serial)"
}

func bytes(_ n: Int, seed: Int? = nil) -> Data {
    let s = seed ?? n
    return Data((0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ s) })
}

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let t = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
}

var tests: [(String, () throws -> Void)] = []
func test(_ name: String, _ body: @escaping () throws -> Void) { tests.append((name, body)) }

test("put and get round trip, sizes 0 to 1 MiB") {
    let q = try SageQueue.create(qname("rt"), capacity: 4 << 20)
    defer { q.detach() }
    try check(q.created(), "created() should be true for the creator")
    for n in [0, 1, 7, 4096, 65_537, 1 << 20] {
        let m = bytes(n)
        try q.put(m)
        try check(try q.get() == m, "message of \(n) bytes changed")
    }
    try checkEq(q.qsize(), 0, "qsize after draining")
    try check(q.isEmpty(), "isEmpty after draining")
}

test("generated put(data:timeout:) and get(timeout:); [UInt8] put") {
    let q = try SageQueue.openOrCreate(qname("gen"))
    defer { q.detach() }
    try q.put(data: bytes(16), timeout: 1)
    try checkEq(try q.get(timeout: 1), bytes(16), "generated round trip")
    try q.put([1, 2, 3])
    try checkEq(try q.get(), Data([1, 2, 3]), "[UInt8] round trip")
    let slice = bytes(32)[8..<20] // a Data slice whose indices do not start at 0
    try q.put(slice)
    try checkEq(try q.get(), Data(slice), "slice round trip")
}

test("FIFO order and qsize") {
    let q = try SageQueue.openOrCreate(qname("fifo"))
    defer { q.detach() }
    for i in 0..<100 { try q.put(Data("m\(i)".utf8)) }
    try checkEq(q.qsize(), 100, "qsize")
    for i in 0..<100 { try checkEq(String(decoding: try q.get(), as: UTF8.self), "m\(i)", "message \(i)") }
}

test("Empty: at once with 0, after the timeout otherwise") {
    let q = try SageQueue.openOrCreate(qname("empty"))
    defer { q.detach() }
    try raises("Empty", { _ = try q.get(timeout: 0) }, isEmpty)
    let t = try seconds { try raises("Empty", { _ = try q.get(timeout: 0.2) }, isEmpty) }
    try check(t >= 0.18 && t < 2.0, "get(0.2) raised Empty after \(t) s")
    try check(try q.getOrNil() == nil, "getOrNil on an empty queue")
    try check(try q.getOrNil(timeout: 0.05) == nil, "getOrNil(0.05)")
    try raises("Empty", { _ = try q.getMany(maxItems: 10, timeout: 0) }, isEmpty)
}

test("Full: at once with 0, after the timeout otherwise") {
    let q = try SageQueue.create(qname("full"), capacity: 4096)
    defer { q.detach() }
    try checkEq(q.capacity(), 4096, "capacity")
    var n = 0
    while try q.offer(bytes(100)) { n += 1 }
    try check(n > 10, "only \(n) messages of 100 bytes fit in 4096")
    try raises("Full", { try q.put(bytes(100), timeout: 0) }, isFull)
    let t = try seconds { try raises("Full", { try q.put(bytes(100), timeout: 0.2) }, isFull) }
    try check(t >= 0.18 && t < 2.0, "put(0.2) raised Full after \(t) s")
    _ = try q.get()
    try q.put(bytes(100), timeout: 0)
    try checkEq(Int(q.qsize()), n, "qsize")
}

test("maxItems bounds the number of messages; a blocked put wakes on a get") {
    let q = try SageQueue.create(qname("bound"), maxItems: 2)
    defer { q.detach() }
    try checkEq(q.maxItems(), 2, "maxItems")
    try checkEq(try q.stats().maxItems, 2, "stats.maxItems")
    try checkEq(try q.putMany([bytes(1), bytes(2), bytes(3)], timeout: 0), 2, "put by the batch")
    try check(q.isFull(), "not full at the bound")
    try raises("Full", { try q.put(bytes(3), timeout: 0) }, isFull)
    let t = Thread {
        Thread.sleep(forTimeInterval: 0.1)
        _ = try? q.get()
    }
    t.start()
    let waited = try seconds { try q.put(bytes(3), timeout: 5) }
    try check(waited >= 0.05 && waited < 2.0, "the blocked put waited \(waited) s")
    let b = try SageQueue.openOrCreate(q.name(), maxItems: 7)
    defer { b.detach() }
    try checkEq(b.maxItems(), 2, "an opened queue keeps its bound")
}

test("a blocked get wakes when another thread puts") {
    let q = try SageQueue.openOrCreate(qname("wake"))
    defer { q.detach() }
    let t = Thread {
        Thread.sleep(forTimeInterval: 0.1)
        try? q.put(Data("late".utf8))
    }
    t.start()
    let got = try q.getOrNil(timeout: 5)
    try checkEq(got.map { String(decoding: $0, as: UTF8.self) }, "late", "message")
}

test("batches: putMany, getMany, maxItems and maxBytes") {
    let q = try SageQueue.openOrCreate(qname("batch"))
    defer { q.detach() }
    let msgs = (0..<200).map { bytes($0 * 13 % 500, seed: $0) }
    try checkEq(try q.putMany(msgs), 200, "putMany count")
    try checkEq(try q.putMany([]), 0, "putMany of nothing")
    try checkEq(q.qsize(), 200, "qsize")
    let first = try q.getMany(maxItems: 50)
    try checkEq(first.count, 50, "getMany(50) count")
    let limited = try q.getMany(maxItems: 1000, maxBytes: 1000)
    let total = limited.reduce(0) { $0 + $1.count }
    try check(limited.count == 1 || (!limited.isEmpty && total <= 1000),
              "maxBytes 1000 gave \(limited.count) messages of \(total) bytes")
    let rest = try q.getMany(maxItems: 1000, timeout: 0)
    let all = first + limited + rest
    try checkEq(all.count, 200, "messages taken")
    for i in msgs.indices { try check(all[i] == msgs[i], "message \(i) changed") }
    try raises("Empty", { _ = try q.getMany(maxItems: 5, timeout: 0) }, isEmpty)
}

test("batches: generated putBatch/getBatch with Frames") {
    let q = try SageQueue.openOrCreate(qname("frames"))
    defer { q.detach() }
    let msgs = [bytes(0), bytes(1), bytes(300)]
    try checkEq(try q.putBatch(frames: Frames.encode(msgs), timeout: 1), 3, "putBatch count")
    let got = try Frames.decode(q.getBatch(maxItems: 10, maxBytes: .max, timeout: 1))
    try checkEq(got, msgs, "frames")
    var bad = Data([10, 0, 0, 0])
    bad.append(contentsOf: [0, 0])
    try raises("InvalidArgument", { _ = try q.putBatch(frames: bad, timeout: 0) }, isInvalidArgument)
    try raises("InvalidArgument", { _ = try q.getBatch(maxItems: 0, maxBytes: 10, timeout: 0) },
               isInvalidArgument)
    try raises("InvalidArgument", { _ = try Frames.decode(bad) }, isInvalidArgument)
}

test("a batch that does not fit: partial count, then Full") {
    let q = try SageQueue.create(qname("partial"), capacity: 4096)
    defer { q.detach() }
    let msgs = Array(repeating: bytes(100), count: 100)
    let n = try q.putMany(msgs, timeout: 0)
    try check(n >= 1 && n < 100, "putMany put \(n) of 100")
    try checkEq(Int(q.qsize()), n, "qsize")
    try raises("Full", { try q.putMany(Array(msgs[n...]), timeout: 0) }, isFull)
}

test("TooLarge with size and maxSize") {
    let q = try SageQueue.create(qname("large"), capacity: 4096)
    defer { q.detach() }
    let max = q.maxMessageSize()
    try checkEq(max, maxMessageSize(capacity: 4096), "maxMessageSize agrees with the function")
    try check(max >= 1 && max < 4096, "maxMessageSize \(max)")
    try q.put(bytes(Int(max)), timeout: 0)
    try checkEq(try q.get().count, Int(max), "largest message")
    let e = try raises("TooLarge", { try q.put(bytes(Int(max) + 1), timeout: 0) }) {
        if case QueueError.TooLarge = $0 { return true }; return false
    }
    guard case let QueueError.TooLarge(size, maxSize) = e else { throw TestFailure(description: "") }
    try checkEq(size, max + 1, "TooLarge.size")
    try checkEq(maxSize, max, "TooLarge.maxSize")
    try raises("TooLarge", { try q.putMany([bytes(1), bytes(5000)]) }) {
        if case QueueError.TooLarge = $0 { return true }; return false
    }
    try checkEq(q.qsize(), 0, "nothing put from a batch with a message too large")
}

test("bad names raise InvalidName") {
    for bad in ["", ".hidden", "a/b", "a b", "é", String(repeating: "x", count: 201), "../etc"] {
        let e = try raises("InvalidName", { _ = try SageQueue.openOrCreate(bad) }) {
            if case QueueError.InvalidName = $0 { return true }; return false
        }
        guard case let QueueError.InvalidName(name, _) = e else { throw TestFailure(description: "") }
        try checkEq(name, bad, "InvalidName.name")
        try raises("InvalidName", { try validateName(name: bad) }) {
            if case QueueError.InvalidName = $0 { return true }; return false
        }
    }
    try validateName(name: "ok_name-1.x")
}

test("NotFound and AlreadyExists") {
    let name = qname("exists")
    let notFound: (Error) -> Bool = { if case QueueError.NotFound = $0 { return true }; return false }
    try raises("NotFound", { _ = try SageQueue.open(name) }, notFound)
    do {
        let q = try SageQueue.create(name)
        defer { q.detach() }
        let e = try raises("AlreadyExists", { _ = try SageQueue.create(name) }) {
            if case QueueError.AlreadyExists = $0 { return true }; return false
        }
        guard case let QueueError.AlreadyExists(n) = e else { throw TestFailure(description: "") }
        try checkEq(n, name, "AlreadyExists.name")
        let other = try SageQueue.open(name)
        defer { other.detach() }
        try check(!other.created(), "created() for an opener")
        try other.put(Data("x".utf8))
        try checkEq(try q.get(), Data("x".utf8), "message through two handles")
    }
    try raises("NotFound", { _ = try SageQueue.open(name) }, notFound) // auto_cleanup removed it
}

test("close, then every call raises Closed") {
    let q = try SageQueue.openOrCreate(qname("closed"))
    try q.put(Data("a".utf8))
    q.detach()
    q.detach() // idempotent
    try check(q.isClosed(), "isClosed after close")
    try raises("Closed", { try q.put(Data("b".utf8)) }, isClosed)
    try raises("Closed", { _ = try q.get(timeout: 0) }, isClosed)
    try raises("Closed", { _ = try q.getOrNil() }, isClosed)
    try raises("Closed", { try q.putMany([bytes(1)]) }, isClosed)
    try raises("Closed", { _ = try q.getMany(maxItems: 1, timeout: 0) }, isClosed)
    try raises("Closed", { _ = try q.stats() }, isClosed)
    try raises("Closed", { try rawPut(id: q.rawId(), data: bytes(1), timeout: 0) }, isClosed)
}

test("unlink: the other handles see Closed") {
    let name = qname("unlink")
    let a = try SageQueue.openOrCreate(name)
    let b = try SageQueue.open(name)
    try check(FileManager.default.fileExists(atPath: a.path()), "segment file exists")
    try a.unlink()
    try check(!FileManager.default.fileExists(atPath: b.path()), "segment file removed")
    let e = try raises("Closed", { try b.put(Data("x".utf8), timeout: 0) }, isClosed)
    guard case let QueueError.Closed(reason) = e else { throw TestFailure(description: "") }
    try check(!reason.isEmpty, "Closed.reason")
    try raises("Closed", { _ = try a.get(timeout: 0) }, isClosed)
    b.detach()
}

test("scope: the last reference going away detaches the handle") {
    let name = qname("scope")
    let owner = try SageQueue.openOrCreate(name)
    defer { owner.detach() }
    var id: UInt64 = 0
    do {
        let q = try SageQueue.open(name)
        try checkEq(try owner.stats().attached, 2, "attached inside the scope")
        try q.put(Data("kept".utf8))
        id = q.rawId()
    }
    try checkEq(try owner.stats().attached, 1, "attached after the scope")
    try raises("Closed", { try rawPut(id: id, data: bytes(1), timeout: 0) }, isClosed)
    try checkEq(try owner.get(), Data("kept".utf8), "message put inside the scope")
}

test("stats, reset_stats, task_done and join") {
    let q = try SageQueue.openOrCreate(qname("stats"))
    defer { q.detach() }
    try q.putMany(Array(repeating: bytes(10), count: 10))
    _ = try q.getMany(maxItems: 4)
    let s = try q.stats()
    try checkEq(s.msgsIn, 10, "msgsIn")
    try checkEq(s.msgsOut, 4, "msgsOut")
    try checkEq(s.bytesIn, 100, "bytesIn")
    try checkEq(s.messages, 6, "messages")
    try checkEq(s.attached, 1, "attached")
    try checkEq(s.name, q.name(), "name")
    try checkEq(s.creatorPid, UInt32(pid), "creatorPid")
    try checkEq(s.unfinishedTasks, 10, "unfinishedTasks")
    try check(!(try q.join(timeout: 0)), "join with unfinished tasks")
    try q.taskDone(count: 10)
    try check(try q.join(timeout: 0), "join after taskDone")
    try raises("InvalidArgument", { try q.taskDone(count: 1) }, isInvalidArgument)
    try q.resetStats()
    try checkEq(try q.stats().msgsIn, 0, "msgsIn after reset")
    try check(try listQueues().contains { $0.name == q.name() && $0.valid }, "listQueues")
    try check(q.path().hasPrefix(queueDir()), "path in queueDir")
}

test("threads: 2 producers, 2 consumers, exactly once") {
    let q = try SageQueue.openOrCreate(qname("mpmc"), capacity: 64 * 1024)
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
    for _ in 0..<2 {
        group.enter()
        Thread {
            while true {
                let batch: [Data]
                do {
                    batch = try q.getMany(maxItems: 64, timeout: 0.5)
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
    try check(group.wait(timeout: .now() + 60) == .success, "threads did not finish in 60 s")
    try checkEq(tally.dup, 0, "duplicates")
    try checkEq(tally.seen.count, total, "distinct messages")
}

func bench() throws {
    func run(_ label: String, _ n: Int, _ body: (SageQueue, Int) throws -> Void) throws {
        let q = try SageQueue.openOrCreate(qname("bench"), capacity: 4 << 20)
        defer { q.detach() }
        try body(q, n / 10)
        let t = DispatchTime.now().uptimeNanoseconds
        try body(q, n)
        let us = Double(DispatchTime.now().uptimeNanoseconds - t) / 1e3 / Double(n)
        print("bench: \(label.padding(toLength: 44, withPad: " ", startingAt: 0)) \(String(format: "%8.2f", us)) us per message")
    }
    try run("one FFI call (maxMessageSize function)", 1_000_000) { _, n in
        for _ in 0..<n { _ = maxMessageSize(capacity: 4096) }
    }
    let m64 = bytes(64)
    try run("put+get 64 B, generated methods", 500_000) { q, n in
        for _ in 0..<n { try q.put(data: m64, timeout: -1); _ = try q.get(timeout: -1) }
    }
    try run("put+get 64 B, conveniences (view gets)", 500_000) { q, n in
        for _ in 0..<n { try q.put(m64); _ = try q.get() }
    }
    try run("put+get 64 B, raw functions by id", 500_000) { q, n in
        let id = q.rawId()
        for _ in 0..<n { try rawPut(id: id, data: m64, timeout: -1); _ = try rawGet(id: id, timeout: -1) }
    }
    for size in [64, 4096] {
        let batch = Array(repeating: bytes(size), count: 100)
        try run("put+get \(size) B, batches of 100", 2_000_000 / (size / 64 < 10 ? 1 : 20)) { q, n in
            for _ in 0..<(n / 100) { try q.putMany(batch); _ = try q.getMany(maxItems: 100) }
        }
    }
    try run("put+get 64 KiB, single", 20_000) { q, n in
        let m = bytes(65536)
        for _ in 0..<n { try q.put(m); _ = try q.get() }
    }
}

var passed = 0
var failed = 0
for (name, body) in tests {
    do {
        try body()
        passed += 1
        print("ok    \(name)")
    } catch {
        failed += 1
        print("FAIL  \(name): \(error)")
    }
}
if CommandLine.arguments.contains("--bench") && failed == 0 {
    do { try bench() } catch { print("bench failed: \(error)"); failed += 1 }
}
print("\(passed) passed, \(failed) failed")
exit(failed == 0 ? 0 : 1)
