// Put+get timings of the Swift package, one thread, a queue in /dev/shm (or $SAGE_QUEUE_DIR).
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
func run(_ label: String, messages n: Int, per call: Int = 1, _ body: (Queue, Int) throws -> Void) throws {
    serial += 1
    if !filter.isEmpty && !label.contains(filter) { return }
    let q = try Queue.create("swift-bench-\(getpid())-\(serial)", capacity: 16 << 20)
    defer { q.detach() }
    try body(q, max(1, n / 10 / call)) // warm up
    var wall: [Double] = [], cpu: [Double] = []
    for _ in 0..<rounds {
        let (t, c) = (now(), now(CLOCK_THREAD_CPUTIME_ID))
        try body(q, n / call)
        wall.append(Double(now() - t) / 1e3 / Double(n))
        cpu.append(Double(now(CLOCK_THREAD_CPUTIME_ID) - c) / 1e3 / Double(n))
    }
    wall.sort()
    cpu.sort()
    func f(_ v: Double) -> String { String(format: "%6.3f", v) }
    let pad = label.padding(toLength: 50, withPad: " ", startingAt: 0)
    print("\(pad) wall best \(f(wall[0])) median \(f(wall[rounds / 2]))   cpu best \(f(cpu[0])) median \(f(cpu[rounds / 2]))")
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
