// Timings of the Swift package, a queue in /dev/shm (or $SAGE_QUEUE_DIR): put+get in one
// thread; loans and views of 1 MiB against put/get of 1 MiB Data; async calls, and round trips
// between a task and a thread, two tasks, two threads.
//
//   bash tests/swift/run.sh --bench         (builds with -c release, runs this in the root)
//   .build/release/sage-queue-bench [ROUNDS [FILTER]]  (in the root, after swift build -c release)
//
// Each line: the best and the median of ROUNDS (default 5) rounds, in µs per message (for a
// put+get pair: per put and get of one message), in wall-clock time and in this thread's CPU
// time (which leaves out the time other processes had the core: on a busy machine the wall
// numbers wander, the CPU numbers much less); FILTER runs only the lines whose label holds
// it. Nothing here asserts a time.
import Foundation
import SageQueueFFI
import SageQueueFFIRaw

let args = CommandLine.arguments
let rounds = args.count > 1 ? max(1, Int(args[1]) ?? 5) : 5
let filter = args.count > 2 ? args[2] : ""

func now(_ clock: clockid_t = CLOCK_MONOTONIC) -> UInt64 {
    var t = timespec()
    clock_gettime(clock, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

func bytes(_ n: Int) -> Data { Data((0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }) }

var serial = 0
func newQueue() throws -> Queue {
    serial += 1
    return try Queue.create("swift-bench-\(getpid())-\(serial)", capacity: 16 << 20)
}

/// One line: best and median of the rounds, µs per message (and GB/s for `size` bytes each).
func report(_ label: String, _ wall: [Double], _ cpu: [Double]?, size: Int? = nil) {
    let wall = wall.sorted()
    func f(_ v: Double) -> String { String(format: "%7.3f", v) }
    let pad = label.padding(toLength: 56, withPad: " ", startingAt: 0)
    var line = "\(pad) wall best \(f(wall[0])) median \(f(wall[wall.count / 2]))"
    if let cpu = cpu?.sorted() { line += "   cpu best \(f(cpu[0])) median \(f(cpu[cpu.count / 2]))" }
    if let size {
        line += String(format: "   %.2f GB/s (best wall)", Double(size) / (wall[0] * 1e3))
    }
    print(line)
}

func run(_ label: String, messages n: Int, per call: Int = 1, size: Int? = nil, _ body: (Queue, Int) throws -> Void) throws {
    if !filter.isEmpty && !label.contains(filter) { return }
    let q = try newQueue()
    defer { q.detach() }
    try body(q, max(1, n / 10 / call)) // warm up
    var wall: [Double] = [], cpu: [Double] = []
    for _ in 0..<rounds {
        let (t, c) = (now(), now(CLOCK_THREAD_CPUTIME_ID))
        try body(q, n / call)
        wall.append(Double(now() - t) / 1e3 / Double(n))
        cpu.append(Double(now(CLOCK_THREAD_CPUTIME_ID) - c) / 1e3 / Double(n))
    }
    report(label, wall, cpu, size: size)
}

/// As run, for async bodies, run in a detached task: top-level code runs on the main actor,
/// and every call of a nonisolated async function from there would hop to the global
/// executor and back (about 4 µs each way here), which is not what a task pays. Wall time only
/// (a task may move between threads).
func runAsync(_ label: String, messages n: Int, _ body: @escaping @Sendable (Queue, Int) async throws -> Void) async throws {
    if !filter.isEmpty && !label.contains(filter) { return }
    let q = try newQueue()
    defer { q.detach() }
    let wall = try await Task.detached { () async throws -> [Double] in
        try await body(q, max(1, n / 10))
        var wall: [Double] = []
        for _ in 0..<rounds {
            let t = now()
            try await body(q, n)
            wall.append(Double(now() - t) / 1e3 / Double(n))
        }
        return wall
    }.value
    report(label, wall, nil)
}

let m64 = bytes(64)
print("sage-queue Swift benchmark: \(rounds) rounds each, µs per message (put + get)")
try run("64 B: Queue.put(Data) + Queue.get() -> Data", messages: 1_000_000) { q, n in
    for _ in 0..<n {
        try q.put(m64)
        _ = try q.get()
    }
}
try run("64 B: Queue.put(Data) + Queue.withNext (no copy)", messages: 1_000_000) { q, n in
    var sum = 0
    for _ in 0..<n {
        try q.put(m64)
        sum &+= try q.withNext { $0.count } ?? 0
    }
    precondition(sum == 64 * n)
}
try run("64 B: msg_put + msg_take C calls only (the floor)", messages: 1_000_000) { q, n in
    // The floor: what the Rust side and one C call each way cost, with no Swift object made.
    var status = RustCallStatus()
    let none = ForeignBytes(len: 0, data: nil)
    try m64.withUnsafeBytes { b in
        let body = ForeignBytes(len: Int32(b.count), data: b.baseAddress!.assumingMemoryBound(to: UInt8.self))
        for _ in 0..<n {
            guard uniffi_sage_queue_fn_func_msg_put(q.id, none, body, -1, &status) == 1,
                  uniffi_sage_queue_fn_func_msg_take(q.id, -1, &status) == 64
            else { throw QueueError.Io(reason: "bench: a call failed") }
        }
    }
}
try run("64 B: handle.put + handle.get (generated methods)", messages: 200_000) { q, n in
    for _ in 0..<n {
        try q.handle.put(data: m64, timeout: -1)
        _ = try q.handle.get(timeout: -1)
    }
}
for size in [64, 4096] {
    let batch = Array(repeating: bytes(size), count: 100)
    try run("\(size) B: putMany + getMany, batches of 100", messages: size == 64 ? 2_000_000 : 200_000, per: 100) { q, n in
        for _ in 0..<n {
            try q.putMany(batch)
            _ = try q.getMany(maxItems: 100)
        }
    }
}
let m64k = bytes(65536)
try run("64 KiB: Queue.put(Data) + Queue.get() -> Data", messages: 20_000) { q, n in
    for _ in 0..<n {
        try q.put(m64k)
        _ = try q.get()
    }
}

// ---- in place: 1 MiB messages, loans and views against put and get ----

let mib = 1 << 20
let m1m = bytes(mib)
/// Read every byte of a message (8 at a time), as a consumer that looks at all of it would.
func sum(_ b: UnsafeRawBufferPointer) -> UInt64 {
    guard let base = b.baseAddress, Int(bitPattern: base) % 8 == 0 else {
        var s: UInt64 = 0
        for i in 0..<(b.count / 8) { s &+= b.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self) }
        return s
    }
    // Aligned (ring payloads, Data's storage): a loop the compiler vectorizes.
    let words = UnsafeBufferPointer(start: base.assumingMemoryBound(to: UInt64.self), count: b.count / 8)
    var s: UInt64 = 0
    for w in words { s &+= w }
    return s
}
let want = m1m.withUnsafeBytes { sum($0) }
try run("1 MiB: put(Data) + get() -> Data", messages: 2000, size: mib) { q, n in
    for _ in 0..<n {
        try q.put(m1m)
        _ = try q.get()
    }
}
try run("1 MiB: put(Data) + get() -> Data, read it all", messages: 2000, size: mib) { q, n in
    for _ in 0..<n {
        try q.put(m1m)
        let s = try q.get().withUnsafeBytes { sum($0) }
        precondition(s == want)
    }
}
try run("1 MiB: put(Data) + withNext, read it all", messages: 2000, size: mib) { q, n in
    for _ in 0..<n {
        try q.put(m1m)
        let s = try q.withNext { sum($0) }
        precondition(s == want)
    }
}
try run("1 MiB: loan (copy the Data in) + view (no read)", messages: 2000, size: mib) { q, n in
    for _ in 0..<n {
        try q.loan(count: mib) { dst in m1m.withUnsafeBytes { dst.copyMemory(from: $0) } }
        try q.view { _ in }
    }
}
try run("1 MiB: loan (copy the Data in) + view, read it all", messages: 2000, size: mib) { q, n in
    for _ in 0..<n {
        try q.loan(count: mib) { dst in m1m.withUnsafeBytes { dst.copyMemory(from: $0) } }
        let s = try q.view { sum($0) }
        precondition(s == want)
    }
}
try run("1 MiB: loan + view, no copy, no read (the floor)", messages: 2000, size: mib) { q, n in
    for _ in 0..<n {
        try q.loan(count: mib) { dst in dst[0] = 1 }
        try q.view { _ in }
    }
}
try run("64 B: loan + view (per-message overhead)", messages: 1_000_000) { q, n in
    for _ in 0..<n {
        try q.loan(count: 64) { dst in m64.withUnsafeBytes { dst.copyMemory(from: $0) } }
        try q.view { _ in }
    }
}
do {
    // Two threads: a producer (put, or loan) and this thread as the consumer (get, or view).
    for inPlace in [false, true] {
        let label = inPlace ? "1 MiB, 2 threads: loan (copy in) -> view, read it all" : "1 MiB, 2 threads: put(Data) -> get(), read it all"
        if !filter.isEmpty && !label.contains(filter) { continue }
        var wall: [Double] = []
        for _ in 0..<rounds {
            let q = try newQueue()
            let n = 2000
            let producer = Thread {
                for _ in 0..<n {
                    if inPlace {
                        try! q.loan(count: mib) { dst in m1m.withUnsafeBytes { dst.copyMemory(from: $0) } }
                    } else {
                        try! q.put(m1m)
                    }
                }
            }
            let t = now()
            producer.start()
            for _ in 0..<n {
                let s = inPlace ? try q.view { sum($0) } : try q.get().withUnsafeBytes { sum($0) }
                precondition(s == want)
            }
            wall.append(Double(now() - t) / 1e3 / Double(n))
            while !producer.isFinished { usleep(1000) }
            q.detach()
        }
        report(label, wall, nil, size: mib)
    }
}

// ---- async ----

try await runAsync("64 B: putAsync + getAsync (no wait: the message is there)", messages: 500_000) { q, n in
    for _ in 0..<n {
        try await q.putAsync(m64)
        _ = try await q.getAsync()
    }
}
/// Round trips of one 64 B message between two parties on two queues (ping, pong).
func pingPong(_ label: String, n: Int, asyncPinger: Bool, asyncPonger: Bool) async throws {
    if !filter.isEmpty && !label.contains(filter) { return }
    var wall: [Double] = []
    for round in 0...rounds {
        let ping = try newQueue(), pong = try newQueue()
        let ponger: Task<Void, Error>?
        let thread: Thread?
        if asyncPonger {
            ponger = Task.detached {
                for _ in 0..<n {
                    let m = try await ping.getAsync()
                    try await pong.putAsync(m)
                }
            }
            thread = nil
        } else {
            ponger = nil
            thread = Thread {
                for _ in 0..<n {
                    let m = try! ping.get()
                    try! pong.put(m)
                }
            }
            thread!.start()
        }
        // The pinger: a detached task (not the main actor: see runAsync), or this thread.
        let t = now()
        if asyncPinger {
            try await Task.detached {
                for _ in 0..<n {
                    try await ping.putAsync(m64)
                    _ = try await pong.getAsync()
                }
            }.value
        } else {
            for _ in 0..<n {
                try ping.put(m64)
                _ = try pong.get()
            }
        }
        if round > 0 { wall.append(Double(now() - t) / 1e3 / Double(n)) } // round 0 warms up
        try await ponger?.value
        while let th = thread, !th.isFinished { usleep(100) }
        ping.detach()
        pong.detach()
    }
    report(label, wall, nil)
}
try await pingPong("64 B round trip: thread (get) <-> thread (get)", n: 20_000, asyncPinger: false, asyncPonger: false)
try await pingPong("64 B round trip: task (getAsync) <-> thread (get)", n: 20_000, asyncPinger: true, asyncPonger: false)
try await pingPong("64 B round trip: task (getAsync) <-> task (getAsync)", n: 20_000, asyncPinger: true, asyncPonger: true)
