"""The Python peer of the interop test (tests/interop/run.py); Peer.kt and peer.swift do the
same in Kotlin and Swift. Uses sage_queue.SageQueue with serializer="raw".

    peer.py produce QUEUE PRODUCER COUNT SIZES     put COUNT messages, singly and in batches
    peer.py consume QUEUE PRODUCER COUNT SIZES     take COUNT messages of PRODUCER in order,
                                                   check each byte; print a JSON report
    peer.py drain QUEUE                            take messages of any producer until a STOP
                                                   message; print a JSON report of their tags
    peer.py inspect QUEUE                          print "ready", then answer stdin lines:
                                                   "stats" (JSON), "get", "put N"; EOF ends

Message SEQ of PRODUCER with size n (SIZES picks n from the sequence number):
  n >= 12: u64 LE tag (PRODUCER << 32 | SEQ), filler, u32 LE CRC-32 of all bytes before it
  n < 12:  filler only
  filler byte at index i: (i * 31 + SEQ + PRODUCER * 7) & 0xff
"""

import json
import struct
import sys
import zlib

from sage_queue import Empty, SageQueue

SIZES = {
    "all": [0, 1, 7, 11, 12, 13, 64, 100, 1000, 4096, 4097, 65536, 100000, 1 << 20],
    "tagged": [12, 13, 64, 100, 1000, 4096, 65536, 262144],
}
STOP = b"STOP"
WAIT = 60.0  # seconds any single wait may take before the peer gives up
CAPACITY = 4 << 20


def size_of(seq, sizes):
    s = SIZES[sizes]
    return s[(seq * 5) % len(s)]


def message(producer, seq, n):
    k = (seq + producer * 7) & 0xFF
    pattern = bytes((i * 31 + k) & 0xFF for i in range(256))
    filler = (pattern * (n // 256 + 1))[:n]
    if n < 12:
        return filler
    body = struct.pack("<Q", (producer << 32) | seq) + filler[8 : n - 4]
    return body + struct.pack("<I", zlib.crc32(body))


def check_tagged(m):
    """(producer, seq) of a tagged message, or None if its checksum or bytes are wrong."""
    if len(m) < 12:
        return None
    (tag,) = struct.unpack_from("<Q", m)
    producer, seq = tag >> 32, tag & 0xFFFFFFFF
    (crc,) = struct.unpack_from("<I", m, len(m) - 4)
    if crc != zlib.crc32(m[:-4]) or m != message(producer, seq, len(m)):
        return None
    return producer, seq


def open_queue(name):
    return SageQueue(name, maxsize=CAPACITY, serializer="raw", create=False)


def produce(q, producer, count, sizes):
    seq, chunk = 0, 0
    while seq < count:
        k = min(1 + chunk % 17, count - seq)
        msgs = [message(producer, s, size_of(s, sizes)) for s in range(seq, seq + k)]
        if chunk % 2 == 0:
            for m in msgs:
                q.put(m, timeout=WAIT)
        else:
            q.put_many(msgs, timeout=WAIT)
        seq += k
        chunk += 1
    return {"count": seq, "bytes": sum(size_of(s, sizes) for s in range(count))}


def consume(q, producer, count, sizes):
    got, nbytes, bad, chunk = 0, 0, [], 0
    while got < count:
        if chunk % 2 == 0:
            msgs = [q.get(timeout=WAIT)]
        else:
            msgs = q.get_many(max_items=min(1 + chunk % 23, count - got), timeout=WAIT)
        for m in msgs:
            if m != message(producer, got, size_of(got, sizes)) or (
                len(m) >= 12 and check_tagged(m) != (producer, got)
            ):
                bad.append(got)
            got += 1
            nbytes += len(m)
        chunk += 1
    return {"count": got, "bytes": nbytes, "bad": bad}


def drain(q):
    tags, nbytes, bad, chunk = [], 0, 0, 0
    while True:
        if chunk % 2 == 0:
            msgs = [q.get(timeout=WAIT)]
        else:
            msgs = q.get_many(max_items=1 + chunk % 23, timeout=WAIT)
        chunk += 1
        stops = sum(1 for m in msgs if m == STOP)
        for m in msgs:
            if m == STOP:
                continue
            t = check_tagged(m)
            if t is None:
                bad += 1
            else:
                tags.append((t[0] << 32) | t[1])
            nbytes += len(m)
        if stops:
            for _ in range(stops - 1):  # a batch took another consumer's STOP: put it back
                q.put(STOP)
            return {"count": len(tags) + bad, "bytes": nbytes, "bad": bad, "tags": tags}


def stats_of(q):
    s = q.get_stats()
    keys = ("name", "path", "capacity", "max_message_size", "used_bytes", "messages",
            "attached", "msgs_in", "msgs_out", "bytes_in", "bytes_out", "creator_pid")  # fmt: skip
    return dict({k: s[k] for k in keys}, qsize=q.qsize())


def inspect(q):
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd == ["stats"]:
            print(json.dumps(stats_of(q)), flush=True)
        elif cmd == ["get"]:
            print(len(q.get(timeout=WAIT)), flush=True)
        elif cmd and cmd[0] == "put":
            for i in range(int(cmd[1])):
                q.put(message(3, i, 100), timeout=WAIT)
            print("done", flush=True)


def main(argv):
    role, name = argv[0], argv[1]
    q = open_queue(name)
    try:
        if role == "produce":
            out = produce(q, int(argv[2]), int(argv[3]), argv[4])
        elif role == "consume":
            out = consume(q, int(argv[2]), int(argv[3]), argv[4])
        elif role == "drain":
            out = drain(q)
        elif role == "inspect":
            inspect(q)
            return 0
        else:
            raise SystemExit(f"unknown role {role}")
    except Empty:
        print(json.dumps({"error": "timed out waiting for a message"}), flush=True)
        return 1
    finally:
        q.close()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
