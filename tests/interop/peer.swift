// The Swift peer of the interop test (tests/interop/run.py): the same roles and messages as
// peer.py (see there), and two more that move the messages in place:
//   produce-loan QUEUE PRODUCER COUNT SIZES   as produce, each message written into a loan
//   consume-view QUEUE PRODUCER COUNT SIZES   as consume, each message checked in a view
// and one for the Swift package's own tests (bindings/swift/Tests, AcksTests):
//   hold-acked QUEUE   take one message by an acknowledged get, print its size and delivery
//                      count, and hold it unacknowledged until stdin closes (the test kills it)
// Built as the executable sage-queue-interop-peer of the Swift package
// (bindings/swift/Package.swift); runs inside the Swift root (bindings/swift/root.sh).
import Foundation
import SageQueueFFI

let sizeSets: [String: [Int]] = [
    "all": [0, 1, 7, 11, 12, 13, 64, 100, 1000, 4096, 4097, 65536, 100000, 1 << 20],
    "tagged": [12, 13, 64, 100, 1000, 4096, 65536, 262144],
]
let stop = Data("STOP".utf8)
let wait = 60.0

func sizeOf(_ seq: Int, _ sizes: String) -> Int {
    let s = sizeSets[sizes]!
    return s[(seq * 5) % s.count]
}

let crcTable: [UInt32] = (0..<256).map { i -> UInt32 in
    var c = UInt32(i)
    for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    return c
}

/// CRC-32 (as zlib and java.util.zip compute it) of the first n bytes.
func crc32(_ p: UnsafeRawBufferPointer, _ n: Int) -> UInt32 {
    var c: UInt32 = 0xFFFF_FFFF
    for i in 0..<n { c = crcTable[Int((c ^ UInt32(p[i])) & 0xff)] ^ (c >> 8) }
    return c ^ 0xFFFF_FFFF
}

/// Write message SEQ of PRODUCER into `m` (its size is the message's), in place.
func write(_ m: UnsafeMutableRawBufferPointer, _ producer: Int, _ seq: Int) {
    let n = m.count
    let k = (seq + producer * 7) & 0xff
    for i in 0..<n { m[i] = UInt8(truncatingIfNeeded: i &* 31 &+ k) }
    if n >= 12 {
        let tag = (UInt64(producer) << 32) | UInt64(seq)
        m.storeBytes(of: tag.littleEndian, toByteOffset: 0, as: UInt64.self)
        let c = crc32(UnsafeRawBufferPointer(m), n - 4)
        m.storeBytes(of: c.littleEndian, toByteOffset: n - 4, as: UInt32.self)
    }
}

func message(_ producer: Int, _ seq: Int, _ n: Int) -> Data {
    let k = (seq + producer * 7) & 0xff
    var m = [UInt8](repeating: 0, count: n)
    for i in 0..<n { m[i] = UInt8(truncatingIfNeeded: i &* 31 &+ k) }
    if n >= 12 {
        let tag = (UInt64(producer) << 32) | UInt64(seq)
        for j in 0..<8 { m[j] = UInt8(truncatingIfNeeded: tag >> (8 * UInt64(j))) }
        let c = m.withUnsafeBytes { crc32($0, n - 4) }
        for j in 0..<4 { m[n - 4 + j] = UInt8(truncatingIfNeeded: c >> (8 * UInt32(j))) }
    }
    return Data(m)
}

/// (producer, seq) of a tagged message, or nil if its checksum or bytes are wrong.
func checkTagged(_ m: Data) -> (Int, Int)? {
    let n = m.count
    if n < 12 { return nil }
    return m.withUnsafeBytes { p -> (Int, Int)? in
        let tag = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        let crc = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: n - 4, as: UInt32.self))
        guard crc == crc32(p, n - 4) else { return nil }
        let (producer, seq) = (Int(tag >> 32), Int(tag & 0xffff_ffff))
        guard m == message(producer, seq, n) else { return nil }
        return (producer, seq)
    }
}

func produce(_ q: Queue, _ producer: Int, _ count: Int, _ sizes: String) throws -> String {
    var seq = 0, chunk = 0, bytes = 0
    while seq < count {
        let k = min(1 + chunk % 17, count - seq)
        let msgs = (seq..<(seq + k)).map { message(producer, $0, sizeOf($0, sizes)) }
        if chunk % 2 == 0 {
            for m in msgs { try q.put(m, timeout: wait) }
        } else {
            let n = try q.putMany(msgs, timeout: wait)
            precondition(n == k, "putMany put \(n) of \(k)")
        }
        bytes += msgs.reduce(0) { $0 + $1.count }
        seq += k
        chunk += 1
    }
    return "{\"count\": \(seq), \"bytes\": \(bytes)}"
}

func consume(_ q: Queue, _ producer: Int, _ count: Int, _ sizes: String) throws -> String {
    var got = 0, bytes = 0, chunk = 0
    var bad: [Int] = []
    while got < count {
        let msgs = chunk % 2 == 0
            ? [try q.get(timeout: wait)]
            : try q.getMany(maxItems: min(1 + chunk % 23, count - got), timeout: wait)
        for m in msgs {
            var ok = m == message(producer, got, sizeOf(got, sizes))
            if ok && m.count >= 12 {
                let t = checkTagged(m)
                ok = t != nil && t! == (producer, got)
            }
            if !ok { bad.append(got) }
            got += 1
            bytes += m.count
        }
        chunk += 1
    }
    return "{\"count\": \(got), \"bytes\": \(bytes), \"bad\": \(bad)}"
}

func produceLoans(_ q: Queue, _ producer: Int, _ count: Int, _ sizes: String) throws -> String {
    var bytes = 0
    for seq in 0..<count {
        let n = sizeOf(seq, sizes)
        try q.loan(count: n, timeout: wait) { write($0, producer, seq) }
        bytes += n
    }
    return "{\"count\": \(count), \"bytes\": \(bytes)}"
}

func consumeViews(_ q: Queue, _ producer: Int, _ count: Int, _ sizes: String) throws -> String {
    var bytes = 0
    var bad: [Int] = []
    for seq in 0..<count {
        let want = message(producer, seq, sizeOf(seq, sizes))
        let ok = try q.view(timeout: wait) { m -> Bool in
            bytes += m.count
            guard m.elementsEqual(want) else { return false }
            if m.count < 12 { return true }
            let tag = UInt64(littleEndian: m.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
            let crc = UInt32(littleEndian: m.loadUnaligned(fromByteOffset: m.count - 4, as: UInt32.self))
            return tag == (UInt64(producer) << 32 | UInt64(seq)) && crc == crc32(m, m.count - 4)
        }
        if !ok { bad.append(seq) }
    }
    return "{\"count\": \(count), \"bytes\": \(bytes), \"bad\": \(bad)}"
}

func drain(_ q: Queue) throws -> String {
    var tags: [UInt64] = []
    var bytes = 0, bad = 0, chunk = 0
    while true {
        let msgs = chunk % 2 == 0
            ? [try q.get(timeout: wait)]
            : try q.getMany(maxItems: 1 + chunk % 23, timeout: wait)
        chunk += 1
        var stops = 0
        for m in msgs {
            if m == stop { stops += 1; continue }
            if let (p, s) = checkTagged(m) { tags.append(UInt64(p) << 32 | UInt64(s)) } else { bad += 1 }
            bytes += m.count
        }
        if stops > 0 {
            for _ in 0..<(stops - 1) { try q.put(stop) } // a batch took another consumer's STOP
            return "{\"count\": \(tags.count + bad), \"bytes\": \(bytes), \"bad\": \(bad), \"tags\": \(tags)}"
        }
    }
}

func statsOf(_ q: Queue) throws -> String {
    let s = try q.stats()
    func str(_ v: String) -> String {
        "\"" + v.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
    return "{\"name\": \(str(s.name)), \"path\": \(str(s.path)), \"capacity\": \(s.capacity), "
        + "\"max_message_size\": \(s.maxMessageSize), \"used_bytes\": \(s.usedBytes), "
        + "\"messages\": \(s.messages), \"attached\": \(s.attached), \"msgs_in\": \(s.msgsIn), "
        + "\"msgs_out\": \(s.msgsOut), \"bytes_in\": \(s.bytesIn), \"bytes_out\": \(s.bytesOut), "
        + "\"creator_pid\": \(s.creatorPid), \"qsize\": \(q.qsize())}"
}

func inspect(_ q: Queue) throws {
    print("ready")
    fflush(stdout)
    while let line = readLine() {
        let cmd = line.split(separator: " ").map(String.init)
        switch cmd.first {
        case "stats": print(try statsOf(q))
        case "get": print(try q.get(timeout: wait).count)
        case "put":
            for i in 0..<Int(cmd[1])! { try q.put(message(4, i, 100), timeout: wait) }
            print("done")
        default: break
        }
        fflush(stdout)
    }
}

func holdAcked(_ q: Queue) throws {
    let m = try q.getAcked(timeout: wait)
    print("{\"size\": \(m.data.count), \"deliveries\": \(m.deliveries)}")
    fflush(stdout)
    while readLine() != nil {}
}

let args = CommandLine.arguments
let role = args[1]
var status: Int32 = 0
do {
    let q = try Queue.open(args[2])
    defer { q.detach() }
    switch role {
    case "produce": print(try produce(q, Int(args[3])!, Int(args[4])!, args[5]))
    case "consume": print(try consume(q, Int(args[3])!, Int(args[4])!, args[5]))
    case "produce-loan": print(try produceLoans(q, Int(args[3])!, Int(args[4])!, args[5]))
    case "consume-view": print(try consumeViews(q, Int(args[3])!, Int(args[4])!, args[5]))
    case "drain": print(try drain(q))
    case "inspect": try inspect(q)
    case "hold-acked": try holdAcked(q)
    default: fatalError("unknown role \(role)")
    }
} catch QueueError.Empty {
    print("{\"error\": \"timed out waiting for a message\"}")
    status = 1
} catch {
    // Any other failure (Incompatible, NotFound, ...): said on stderr, exit 1, no crash dump.
    fputs("sage-queue-interop-peer \(role): \(error)\n", stderr)
    status = 1
}
exit(status)
