// Hand-written conveniences over the generated bindings (SageQueueFFI.swift, made by
// build.sh), compiled into the same module: default arguments, [UInt8] and Data puts without
// labels, optional-returning tries, and batches as arrays of messages. Nothing else: each
// helper is one generated message call.
//
// Gets copy the message out of the calling thread's view buffer (raw_*_view and
// raw_view_address) instead of receiving a buffer that Rust allocates and Swift copies and
// frees: one copy and no allocation per call, which matters for large messages and batches.
import Foundation

extension SageQueue {
    /// A timeout that waits without limit. Timeouts are seconds; 0 tries once without waiting.
    public static let forever: Double = -1
    /// The ring size a queue gets when none is given: 1 MiB.
    public static let defaultCapacity: UInt64 = 1 << 20
    /// The file mode a queue gets when none is given: 0o600 (owner read and write).
    public static let defaultMode: UInt32 = 0o600

    // ---- constructors with defaults ----

    /// Create a new queue (QueueError.AlreadyExists if the name is taken). `maxItems` bounds
    /// the number of messages in the queue, for every process (0: no bound; a put waits for a get).
    public static func create(
        _ name: String, capacity: UInt64 = SageQueue.defaultCapacity, mode: UInt32 = SageQueue.defaultMode,
        autoCleanup: Bool = true, maxItems: UInt64 = 0
    ) throws -> SageQueue {
        try create(name: name, capacity: capacity, mode: mode, autoCleanup: autoCleanup, maxItems: maxItems)
    }

    /// Attach to an existing queue (QueueError.NotFound if there is none).
    public static func open(_ name: String, autoCleanup: Bool = true) throws -> SageQueue {
        try open(name: name, autoCleanup: autoCleanup)
    }

    /// Attach to the queue, creating it first if needed (capacity, mode and maxItems apply only
    /// then; an existing queue keeps its own).
    public static func openOrCreate(
        _ name: String, capacity: UInt64 = SageQueue.defaultCapacity, mode: UInt32 = SageQueue.defaultMode,
        autoCleanup: Bool = true, maxItems: UInt64 = 0
    ) throws -> SageQueue {
        try openOrCreate(name: name, capacity: capacity, mode: mode, autoCleanup: autoCleanup, maxItems: maxItems)
    }

    // ---- messages ----

    /// Put one message; wait up to `timeout` seconds for room (Full), forever by default.
    public func put(_ data: Data, timeout: Double = SageQueue.forever) throws {
        try put(data: data, timeout: timeout)
    }

    /// Put one message given as bytes.
    public func put(_ bytes: [UInt8], timeout: Double = SageQueue.forever) throws {
        try put(data: Data(bytes), timeout: timeout)
    }

    /// Take one message, waiting for it without limit. (`get(timeout:)` is the generated one.)
    public func get() throws -> Data {
        try Self.viewData(rawGetView(id: rawId(), timeout: SageQueue.forever))
    }

    /// Take one message, or nil if none came within `timeout` seconds (0: only look).
    public func getOrNil(timeout: Double = 0) throws -> Data? {
        do {
            return try Self.viewData(rawGetView(id: rawId(), timeout: timeout))
        } catch QueueError.Empty {
            return nil
        }
    }

    /// The calling thread's view buffer, just filled with `n` bytes by a raw_*_view call (its
    /// address is valid until the thread's next such call; nothing runs in between here).
    static func viewBuffer(_ n: UInt64) -> UnsafeRawBufferPointer {
        if n == 0 { return UnsafeRawBufferPointer(start: nil, count: 0) }
        let p = UnsafeRawPointer(bitPattern: UInt(rawViewAddress()))
        return UnsafeRawBufferPointer(start: p, count: Int(n))
    }

    static func viewData(_ n: UInt64) -> Data {
        n == 0 ? Data() : Data(viewBuffer(n))
    }

    /// Put one message; false if no room came within `timeout` seconds (0: only look).
    public func offer(_ data: Data, timeout: Double = 0) throws -> Bool {
        do {
            try put(data: data, timeout: timeout)
            return true
        } catch QueueError.Full {
            return false
        }
    }

    // ---- batches ----

    /// Put `messages` in order with one call; returns how many were put. When the timeout ends
    /// part way the first ones stay put and the count says how many (Full only when none was).
    @discardableResult
    public func putMany(_ messages: [Data], timeout: Double = SageQueue.forever) throws -> Int {
        if messages.isEmpty { return 0 }
        return Int(try putBatch(frames: Frames.encode(messages), timeout: timeout))
    }

    /// Wait up to `timeout` seconds for one message (Empty), then take up to `maxItems`
    /// messages whose sizes total at most `maxBytes` (always at least one), with one call.
    public func getMany(
        maxItems: Int, maxBytes: UInt64 = .max, timeout: Double = SageQueue.forever
    ) throws -> [Data] {
        precondition(maxItems >= 1, "maxItems must be at least 1")
        let items = UInt32(clamping: maxItems)
        let n = try rawGetBatchView(id: rawId(), maxItems: items, maxBytes: maxBytes, timeout: timeout)
        return try Frames.decode(Self.viewBuffer(n))
    }
}

/// Frame buffers: each frame is a little-endian u32 length and that many bytes.
public enum Frames {
    /// The frame buffer of `messages`.
    public static func encode(_ messages: [Data]) -> Data {
        var out = Data(count: messages.reduce(0) { $0 + 4 + $1.count })
        out.withUnsafeMutableBytes { (dst: UnsafeMutableRawBufferPointer) in
            var pos = 0
            for m in messages {
                precondition(m.count <= UInt32.max, "a frame holds at most 4 GiB")
                dst.storeBytes(of: UInt32(m.count).littleEndian, toByteOffset: pos, as: UInt32.self)
                pos += 4
                m.withUnsafeBytes { src in
                    if src.count > 0 {
                        (dst.baseAddress! + pos).copyMemory(from: src.baseAddress!, byteCount: src.count)
                    }
                }
                pos += m.count
            }
        }
        return out
    }

    /// The messages of a frame buffer (as getBatch returns it).
    public static func decode(_ frames: Data) throws -> [Data] {
        try frames.withUnsafeBytes { try decode($0) }
    }

    /// The messages of the frame buffer in `p`.
    public static func decode(_ p: UnsafeRawBufferPointer) throws -> [Data] {
        var out: [Data] = []
        var pos = 0
        while pos < p.count {
            guard p.count - pos >= 4 else {
                throw QueueError.InvalidArgument(reason: "frame \(out.count) is cut short")
            }
            let n = Int(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: pos, as: UInt32.self)))
            pos += 4
            guard p.count - pos >= n else {
                throw QueueError.InvalidArgument(reason: "frame \(out.count) says \(n) bytes")
            }
            out.append(n == 0 ? Data() : Data(bytes: p.baseAddress! + pos, count: n))
            pos += n
        }
        return out
    }
}
