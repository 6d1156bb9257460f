"""``sage-queue top``: a live view of this user's queues, read from their shared headers.

There is no agent process: every refresh lists the queue folder (``_native.list_queues()``)
and reads each queue's full statistics from its header (``_native.queue_stats()``), neither
of which attaches: top is never counted in ``attached`` or ``pids``, never keeps a queue
alive and never removes one.

Rates (messages/s and bytes/s put and taken) are the difference of ``msgs_in``/``msgs_out``/
``bytes_in``/``bytes_out`` between two reads of the same queue, divided by the time between
them. The bridges and gateways that serve a queue across Ray nodes are read from their state
files in the queue folder (bridge_state.py); a bridge's window queues (``__sq_bridge.*``) are
folded into their bridge's line instead of being listed as queues (``--all`` lists them).

Outputs: the live curses view, ``--once`` (one plain-text snapshot), ``--json`` (a list of
per-queue objects, every object with the same keys) and ``--prometheus`` (the Prometheus text
exposition format, counters and gauges only: Prometheus computes rates itself).
"""

import curses
import json
import math
import os
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from . import _native
from .bridge_state import process_alive, read_state
from .errors import QueueNotFound, SageQueueError, from_native
from .queue import _STATS_FIELDS

# A bridge's window queues: "__sq_bridge.<queue>.<key>.in" / ".out" (bridge_state.window_names).
WINDOW_PREFIX = "__sq_bridge."

# The keys of every per-queue object of --json, in this order, for every queue (valid,
# invalid or remote); a value that does not apply or is not known is null.
RECORD_KEYS = (
    "name", "valid", "remote", "error", "path",
    "capacity", "max_message_size", "max_items",
    "messages", "used_bytes", "free_bytes", "fill", "fill_bytes", "fill_items",
    "msgs_in", "msgs_out", "bytes_in", "bytes_out",
    "put_msgs_per_s", "get_msgs_per_s", "put_bytes_per_s", "get_bytes_per_s", "rate_interval_s",
    "attached", "pids", "producers_waiting", "consumers_waiting", "pinned", "pinned_bytes",
    "unacked", "redeliverable", "redelivered", "dead_lettered", "ack_dropped",
    "waits_full", "waits_empty", "lost", "recovered", "unfinished_tasks", "closed",
    "creator_pid", "owner_uid", "created_unix_ms",
    "bridges", "gateways",
)  # fmt: skip

SORTS = ("name", "rate")

Row = Dict[str, Any]


# ---- reading ----


def read_stats(name: str) -> Dict[str, Any]:
    """Every native statistic of queue ``name``, read from its header without attaching
    (``queue_stats``): reading never holds, counts or removes the queue. QueueNotFound if the
    queue went away, other SageQueueErrors if it cannot be read."""
    try:
        s = _native.queue_stats(name)
    except _native.QueueError as e:
        raise from_native(e, name) from None
    stats = {f: getattr(s, f) for f in _STATS_FIELDS}
    stats["pids"] = list(stats["pids"])
    return stats


def _windows_of(queue: str, key: str, listing: Dict[str, Any]) -> Dict[str, Optional[int]]:
    """What a bridge's two window queues on this node hold now (from the listing, which does
    not attach); null when a window is not in this folder."""
    stem = f"{WINDOW_PREFIX}{queue[:120]}.{key}"
    found: Dict[str, Optional[int]] = {}
    for side, suffix in (("inbound", ".in"), ("outbound", ".out")):
        info = listing.get(stem + suffix)
        if info is not None and info.valid:
            found[f"{side}_window_items"] = int(info.messages)
            found[f"{side}_window_bytes"] = int(info.used_bytes)
        else:
            found[f"{side}_window_items"] = found[f"{side}_window_bytes"] = None
    return found


def bridge_states(folder: str, listing: Dict[str, Any]) -> Dict[str, Dict[str, List[Row]]]:
    """The bridge and gateway state files of ``folder``, by queue name: each file's record
    as written, plus its ``key`` and, for a bridge, ``alive`` (its process) and what its
    window queues hold now."""
    found: Dict[str, Dict[str, List[Row]]] = {}
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return found
    for fname in names:
        for side in ("bridge", "gateway"):
            prefix = f".sq-{side}-"
            if not (fname.startswith(prefix) and fname.endswith(".json")):
                continue
            state = read_state(os.path.join(folder, fname))
            queue = state.get("queue")
            if not isinstance(queue, str):
                continue
            key = fname[len(prefix) : -len(".json")]
            entry: Row = {"key": key, **state}
            if side == "bridge":
                pid = state.get("pid")
                entry["alive"] = process_alive(pid) if isinstance(pid, int) and pid > 0 else None
                entry.update(_windows_of(queue, key, listing))
            found.setdefault(queue, {"bridges": [], "gateways": []})[side + "s"].append(entry)
    return found


def sample(include_windows: bool = False) -> Dict[str, Row]:
    """One read of every queue of the folder, by name: ``{"t": monotonic time of the read,
    "info": listing entry, "stats": statistics or None, "error": str or None, "bridges",
    "gateways"}``. Queues only served here by a bridge (they live on another node) have
    ``"remote": True``."""
    try:
        infos = _native.list_queues()
    except _native.QueueError as e:
        raise from_native(e) from None
    folder = _native.queue_dir()
    listing = {i.name: i for i in infos}
    states = bridge_states(folder, listing)
    rows: Dict[str, Row] = {}
    for info in infos:
        if info.name.startswith(WINDOW_PREFIX) and not include_windows:
            continue
        row: Row = {"name": info.name, "path": info.path, "remote": False, "stats": None,
                    "error": None, "t": time.monotonic()}  # fmt: skip
        if not info.valid:
            row["error"] = info.error or "not a valid queue"
        else:
            try:
                row["stats"] = read_stats(info.name)
            except QueueNotFound:
                continue  # removed since the listing
            except Exception as e:  # shown in the queue's row; the other queues go on
                row["error"] = str(e) or type(e).__name__
            row["t"] = time.monotonic()
        rows[info.name] = row
    for queue in states:
        if queue not in rows:
            rows[queue] = {"name": queue, "path": None, "remote": True, "stats": None,
                           "error": None, "t": time.monotonic()}  # fmt: skip
    for name, row in rows.items():
        st = states.get(name, {})
        row["bridges"] = st.get("bridges", [])
        row["gateways"] = st.get("gateways", [])
    return rows


def _same_queue(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    return all(a[k] == b[k] for k in ("path", "created_unix_ms", "creator_pid"))


def record(row: Row, before: Optional[Row]) -> Dict[str, Any]:
    """The per-queue object of one queue (keys RECORD_KEYS), with rates against ``before``
    (the previous read of the same name; rates are null without one, or when the queue was
    recreated or its counters reset in between)."""
    rec: Dict[str, Any] = dict.fromkeys(RECORD_KEYS)
    stats = row["stats"]
    rec.update(
        name=row["name"],
        valid=None if row["remote"] else stats is not None,
        remote=row["remote"],
        error=row["error"],
        path=row["path"],
        pids=[],
        bridges=row["bridges"],
        gateways=row["gateways"],
    )
    if stats is None:
        return rec
    for key in RECORD_KEYS:
        if key in stats and key not in ("name", "path"):
            rec[key] = stats[key]
    capacity = stats["capacity"]
    rec["max_items"] = stats["max_items"] or None
    rec["fill_bytes"] = stats["used_bytes"] / capacity if capacity else 0.0
    rec["fill_items"] = stats["messages"] / stats["max_items"] if stats["max_items"] else None
    rec["fill"] = max(rec["fill_bytes"], rec["fill_items"] or 0.0)
    old = before["stats"] if before is not None else None
    if old is not None and before is not None and _same_queue(old, stats):
        dt = row["t"] - before["t"]
        deltas = [
            stats[k] - old[k] for k in ("msgs_in", "msgs_out", "bytes_in", "bytes_out")
        ]
        if dt > 0 and min(deltas) >= 0:  # a reset_stats() in between: no rate this time
            rec["put_msgs_per_s"] = deltas[0] / dt
            rec["get_msgs_per_s"] = deltas[1] / dt
            rec["put_bytes_per_s"] = deltas[2] / dt
            rec["get_bytes_per_s"] = deltas[3] / dt
            rec["rate_interval_s"] = dt
    return rec


def records(now: Dict[str, Row], before: Optional[Dict[str, Row]]) -> List[Dict[str, Any]]:
    """The per-queue objects of a read, by name."""
    return [record(now[n], (before or {}).get(n)) for n in sorted(now)]


def snapshot(interval: float, include_windows: bool = False) -> List[Dict[str, Any]]:
    """Two reads ``interval`` seconds apart; the second with rates over the interval."""
    first = sample(include_windows)
    time.sleep(interval)
    return records(sample(include_windows), first)


def sort_records(recs: List[Dict[str, Any]], by: str) -> List[Dict[str, Any]]:
    """By name, or by rate (messages put + taken per second, busiest first; queues without a
    rate last, by name)."""
    if by == "rate":

        def key(r: Dict[str, Any]) -> Tuple[int, float, str]:
            put, get = r["put_msgs_per_s"], r["get_msgs_per_s"]
            if put is None:
                return (1, 0.0, r["name"])
            return (0, -(put + get), r["name"])

        return sorted(recs, key=key)
    return sorted(recs, key=lambda r: str(r["name"]))


# ---- plain text (the live view and --once) ----


def _num(value: Optional[float]) -> str:
    """A count in at most 6 characters: 999, 12.3k, 4.56M, ..."""
    if value is None:
        return "-"
    if abs(value) < 1000:
        return f"{value:.0f}" if value == int(value) or abs(value) >= 10 else f"{value:.1f}"
    for unit in ("k", "M", "G", "T", "P"):
        value /= 1000
        if abs(value) < 1000:
            return f"{value:.{1 if abs(value) >= 10 else 2}f}{unit}"
    return f"{value:.0f}P"


def _bytes(value: Optional[float]) -> str:
    """Bytes in at most 6 characters: 512B, 1.50K, 12.0M (powers of 1024)."""
    if value is None:
        return "-"
    if abs(value) < 1024:
        return f"{value:.0f}B"
    for unit in ("K", "M", "G", "T", "P"):
        value /= 1024
        if abs(value) < 1024:
            return f"{value:.{1 if abs(value) >= 10 else 2}f}{unit}"
    return f"{value:.0f}P"


def _bar(fill: Optional[float], cells: int = 10) -> str:
    if fill is None:
        return "-"
    fill = min(max(fill, 0.0), 1.0)
    done = int(round(fill * cells))
    return f"[{'#' * done}{'.' * (cells - done)}]{fill * 100:4.0f}%"


def _bound(max_items: Optional[int]) -> str:
    """The max_items bound: exact when it fits its column, "-" for none."""
    if max_items is None:
        return "-"
    return str(max_items) if max_items < 10**8 else _num(max_items)


def _pids(pids: Sequence[int]) -> str:
    """Distinct pids in order, ``pid*n`` for a process with n handles."""
    counts: Dict[int, int] = {}
    for p in pids:
        counts[p] = counts.get(p, 0) + 1
    return ",".join(str(p) if n == 1 else f"{p}*{n}" for p, n in sorted(counts.items()))


# Columns: (header, width, right-aligned, cell of a valid queue's record).
_Cell = Callable[[Dict[str, Any]], str]
COLUMNS: List[Tuple[str, int, bool, _Cell]] = [
    ("DEPTH", 6, True, lambda r: _num(r["messages"])),
    ("BYTES", 6, True, lambda r: _bytes(r["used_bytes"])),
    ("FILL", 16, False, lambda r: _bar(r["fill"])),
    ("PUT/s", 6, True, lambda r: _num(r["put_msgs_per_s"])),
    ("GET/s", 6, True, lambda r: _num(r["get_msgs_per_s"])),
    ("PUT B/s", 7, True, lambda r: _bytes(r["put_bytes_per_s"])),
    ("GET B/s", 7, True, lambda r: _bytes(r["get_bytes_per_s"])),
    ("ATT", 3, True, lambda r: str(r["attached"])),
    ("PWAIT", 5, True, lambda r: str(r["producers_waiting"])),
    ("CWAIT", 5, True, lambda r: str(r["consumers_waiting"])),
    ("PIN", 4, True, lambda r: str(r["pinned"])),
    ("UNACK", 5, True, lambda r: str(r.get("unacked", 0))),
    ("REDLV", 5, True, lambda r: _num(r.get("redelivered", 0))),
    ("LOST", 5, True, lambda r: _num(r["lost"])),
    ("RECOV", 5, True, lambda r: _num(r["recovered"])),
    ("MAXITEMS", 8, True, lambda r: _bound(r["max_items"])),
    ("CLOSED", 6, False, lambda r: "closed" if r["closed"] else "no"),
    ("PIDS", 0, False, lambda r: _pids(r["pids"])),
]
NAME_MAX = 40


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "~"


def table_lines(recs: List[Dict[str, Any]]) -> List[Tuple[str, str]]:
    """The header line and the lines of each queue, with its bridges and gateways below it,
    as (kind, text); kind is "header", "queue", "invalid", "remote" or "detail"."""
    name_w = min(NAME_MAX, max([4] + [len(r["name"]) for r in recs]))
    head = []
    for title, width, right, _ in COLUMNS:
        head.append(title.rjust(width) if right else title.ljust(width))
    lines = [("header", f"{'NAME'.ljust(name_w)}  {' '.join(head)}".rstrip())]
    for r in recs:
        name = _fit(r["name"], name_w).ljust(name_w)
        if r["remote"]:
            text = "(no queue of this name here: one of another node, served by the bridge below)"
            lines.append(("remote", f"{name}  {text}"))
        elif not r["valid"]:
            lines.append(("invalid", f"{name}  invalid: {r['error']}"))
        else:
            cells = []
            for _, width, right, cell in COLUMNS:
                text = cell(r)
                cells.append(text.rjust(width) if right else text.ljust(width))
            lines.append(("queue", f"{name}  {' '.join(cells)}".rstrip()))
        for b in r["bridges"]:
            lines.append(("detail", "  " + bridge_text(b)))
        for g in r["gateways"]:
            lines.append(("detail", "  " + gateway_text(g)))
    return lines


def bridge_text(b: Dict[str, Any]) -> str:
    """One line for a bridge state file: what it records and what its windows hold."""
    parts = [f"bridge {b['key'][:8]}: {b.get('status', '?')}"]
    if b.get("reason"):
        parts[0] += f" ({b['reason']})"
    if b.get("pid") is not None:
        gone = " (exited)" if b.get("alive") is False else ""
        parts.append(f"pid {b['pid']}{gone}")
    if b.get("owner_node"):
        parts.append(f"queue's node {str(b['owner_node'])[:12]}")
    if b.get("window_items") is not None:
        parts.append(f"window {b['window_items']} items/{_bytes(b.get('window_bytes'))}")
    for side in ("inbound", "outbound"):
        if b.get(f"{side}_window_items") is not None:
            parts.append(
                f"{side} window holds {_num(b[side + '_window_items'])}/"
                f"{_bytes(b[side + '_window_bytes'])}"
            )
    if b.get("items_in") is not None:
        parts.append(
            f"moved in {_num(b['items_in'])}/{_bytes(b.get('bytes_in'))}, "
            f"out {_num(b.get('items_out'))}/{_bytes(b.get('bytes_out'))}"
        )
    for key, label in (("items_given_back", "given back"), ("taken_back", "taken back"),
                       ("lost", "lost")):  # fmt: skip
        if b.get(key) is not None:
            parts.append(f"{label} {_num(b[key])}")
    return "  ".join(parts)


def gateway_text(g: Dict[str, Any]) -> str:
    """One line for a gateway state file (items taken for its bridge, put from it, given
    back)."""
    parts = [f"gateway {g['key'][:8]}:"]
    for key, label in (("sent", "sent to its bridge"), ("received", "received from it"),
                       ("returned", "given back")):  # fmt: skip
        if g.get(key) is not None:
            parts.append(f"{label} {_num(g[key])}")
    return "  ".join(parts)


def title_lines(recs: List[Dict[str, Any]], interval: float, sort: str) -> List[str]:
    folder = _native.queue_dir()
    count = sum(1 for r in recs if not r["remote"])
    return [
        f"sage-queue top  {folder}  {count} queue(s)  every {interval:g} s  "
        f"sorted by {sort}  {time.strftime('%H:%M:%S')}",
        f"read from the headers without attaching (top is pid {os.getpid()}); "
        "rates: messages and bytes per second put and taken; PIN: views pinned now; "
        "UNACK: delivered, not yet acked; REDLV: deliveries again",
    ]


def text_snapshot(recs: List[Dict[str, Any]], interval: float, sort: str) -> str:
    """--once: the title, and the table (or a line saying there are no queues)."""
    lines = title_lines(recs, interval, sort)
    if recs:
        lines += [text for _, text in table_lines(sort_records(recs, sort))]
    else:
        lines.append(f"no queues in {_native.queue_dir()}")
    return "\n".join(lines)


# ---- Prometheus text exposition format ----


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: List[Tuple[Dict[str, str], float]] = []

    def add(self, labels: Dict[str, str], value: Any) -> None:
        if isinstance(value, (int, float)):
            self.samples.append((labels, value))

    def text(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help.replace(chr(92), chr(92) * 2)}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in self.samples:
            inner = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            yield f"{self.name}{{{inner}}} {_sample_value(value)}"


# (metric, type, help, record key) of the per-queue numbers of a valid queue.
_QUEUE_METRICS = (
    ("sage_queue_messages", "gauge", "Messages in the queue now.", "messages"),
    ("sage_queue_used_bytes", "gauge", "Bytes of the ring in use now.", "used_bytes"),
    ("sage_queue_capacity_bytes", "gauge", "Size of the ring in bytes.", "capacity"),
    ("sage_queue_max_message_bytes", "gauge", "Largest message the queue takes, in bytes.",
     "max_message_size"),
    ("sage_queue_max_items", "gauge",
     "Bound on the number of messages (queues created with max_items only).", "max_items"),
    ("sage_queue_fill_ratio", "gauge",
     "How full the queue is, 0 to 1: the larger of used/capacity bytes and messages/max_items.",
     "fill"),
    ("sage_queue_msgs_in_total", "counter", "Messages put (since the last reset_stats).",
     "msgs_in"),
    ("sage_queue_msgs_out_total", "counter", "Messages taken (since the last reset_stats).",
     "msgs_out"),
    ("sage_queue_bytes_in_total", "counter", "Payload bytes put (since the last reset_stats).",
     "bytes_in"),
    ("sage_queue_bytes_out_total", "counter",
     "Payload bytes taken (since the last reset_stats).", "bytes_out"),
    ("sage_queue_waits_full_total", "counter", "Puts that had to wait for room.", "waits_full"),
    ("sage_queue_waits_empty_total", "counter", "Gets that had to wait for a message.",
     "waits_empty"),
    ("sage_queue_lost_total", "counter", "Messages lost with a process that died holding them.",
     "lost"),
    ("sage_queue_recovered_total", "counter",
     "Messages recovered from processes that died while holding them.", "recovered"),
    ("sage_queue_unfinished_tasks", "gauge", "Messages put and not yet marked task_done.",
     "unfinished_tasks"),
    ("sage_queue_attached_processes", "gauge",
     "Handles attached to the queue.",
     "attached"),
    ("sage_queue_producers_waiting", "gauge", "Callers asleep now waiting for room.",
     "producers_waiting"),
    ("sage_queue_consumers_waiting", "gauge", "Callers asleep now waiting for a message.",
     "consumers_waiting"),
    ("sage_queue_pinned", "gauge", "Views pinned now (messages read in place).", "pinned"),
    ("sage_queue_pinned_bytes", "gauge", "Payload bytes of the views pinned now.",
     "pinned_bytes"),
    ("sage_queue_unacked", "gauge", "Messages delivered by get_acked and not yet acknowledged.",
     "unacked"),
    ("sage_queue_redeliverable", "gauge",
     "Messages returned (nack, timeout, dead holder) waiting to be delivered again.",
     "redeliverable"),
    ("sage_queue_redelivered_total", "counter", "Deliveries of a message after its first.",
     "redelivered"),
    ("sage_queue_dead_lettered_total", "counter",
     "Messages moved to the dead-letter queue after max_deliveries.", "dead_lettered"),
    ("sage_queue_ack_dropped_total", "counter",
     "Messages dropped after max_deliveries (no dead-letter queue).", "ack_dropped"),
    ("sage_queue_closed", "gauge", "1 if the queue was removed (closed for every attacher).",
     "closed"),
)  # fmt: skip


# (metric, type, help) of the other families, in the order they are printed (the per-queue
# families of _QUEUE_METRICS go after the first two).
_OTHER_METRICS = (
    ("sage_queue_valid", "gauge", "1 if the queue's file is a valid queue segment, 0 if not."),
    ("sage_queue_invalid_info", "gauge",
     "A file named like a queue that is not a valid segment, and why."),
    ("sage_queue_attached_handles", "gauge",
     "Handles of one attached process (by pid) on the queue."),
    ("sage_queue_bridge_info", "gauge",
     "A bridge to another Ray node serving the queue, with its status."),
    ("sage_queue_bridge_window_items", "gauge",
     "The bridge's window: the most items it holds on this node."),
    ("sage_queue_bridge_window_held_items", "gauge",
     "Items in the bridge's inbound or outbound window queue now."),
    ("sage_queue_bridge_window_held_bytes", "gauge",
     "Bytes in the bridge's inbound or outbound window queue now."),
    ("sage_queue_bridge_items_moved_total", "counter",
     "Items the bridge moved in (to this node) or out (to the queue)."),
    ("sage_queue_bridge_bytes_moved_total", "counter", "Payload bytes the bridge moved in or out."),
    ("sage_queue_bridge_lost_total", "counter",
     "Items lost in transit by failed bridges or gateways."),
    ("sage_queue_gateway_items_total", "counter",
     "Items a gateway sent to its bridge, received from it, or got back."),
)  # fmt: skip


def prometheus_text(recs: List[Dict[str, Any]]) -> str:
    """The records in the Prometheus text exposition format (version 0.0.4): each family's
    HELP and TYPE lines followed by all of its samples; families without samples left out."""
    fams = {name: _Family(name, kind, text) for name, kind, text, _ in _QUEUE_METRICS}
    fams.update((name, _Family(name, kind, text)) for name, kind, text in _OTHER_METRICS)

    def add(name: str, labels: Dict[str, str], value: Any) -> None:
        fams["sage_queue_" + name].add(labels, value)

    for r in recs:
        q = {"queue": r["name"]}
        if not r["remote"]:
            add("valid", q, 1 if r["valid"] else 0)
        if r["valid"] is False:
            add("invalid_info", {**q, "error": str(r["error"])}, 1)
        if r["valid"]:
            for name, _, _, key in _QUEUE_METRICS:
                fams[name].add(q, r[key])
            counts: Dict[int, int] = {}
            for p in r["pids"]:
                counts[p] = counts.get(p, 0) + 1
            for pid, n in sorted(counts.items()):
                add("attached_handles", {**q, "pid": str(pid)}, n)
        for b in r["bridges"]:
            lb = {**q, "bridge": b["key"]}
            node = str(b.get("owner_node", ""))
            add("bridge_info", {**lb, "status": str(b.get("status", "")), "owner_node": node}, 1)
            add("bridge_window_items", lb, b.get("window_items"))
            for side, short in (("inbound", "in"), ("outbound", "out")):
                lw = {**lb, "window": short}
                add("bridge_window_held_items", lw, b.get(f"{side}_window_items"))
                add("bridge_window_held_bytes", lw, b.get(f"{side}_window_bytes"))
            for way in ("in", "out"):
                add("bridge_items_moved_total", {**lb, "direction": way}, b.get(f"items_{way}"))
                add("bridge_bytes_moved_total", {**lb, "direction": way}, b.get(f"bytes_{way}"))
            add("bridge_lost_total", lb, b.get("lost"))
        for g in r["gateways"]:
            for kind in ("sent", "received", "returned"):
                add("gateway_items_total", {**q, "gateway": g["key"], "kind": kind}, g.get(kind))
    first = [name for name, _, _ in _OTHER_METRICS[:2]]
    order = first + [name for name, _, _, _ in _QUEUE_METRICS]
    order += [name for name, _, _ in _OTHER_METRICS[2:]]
    ordered = [fams[name] for name in order]
    lines: List[str] = []
    for family in ordered:
        if family.samples:
            lines.extend(family.text())
    return "\n".join(lines) + "\n" if lines else ""


# ---- the live view ----


class _View:
    """The state of the curses view: the last records, sort order and scroll offset."""

    def __init__(self, interval: float, sort: str, include_windows: bool) -> None:
        self.interval = interval
        self.sort = sort
        self.include_windows = include_windows
        self.recs: List[Dict[str, Any]] = []
        self.error: Optional[str] = None
        self.previous: Optional[Dict[str, Row]] = None
        self.offset = 0

    def refresh(self) -> None:
        try:
            now = sample(self.include_windows)
        except (SageQueueError, OSError) as e:
            self.error = str(e)
            return
        self.error = None
        self.recs = records(now, self.previous)
        self.previous = now

    def draw(self, scr: "curses.window") -> None:
        scr.erase()
        height, width = scr.getmaxyx()
        if height < 4 or width < 20:
            _put(scr, 0, 0, "terminal too small", width, curses.A_BOLD)
            scr.refresh()
            return
        titles = title_lines(self.recs, self.interval, self.sort)
        titles[0] += "  keys: q quit, s sort, arrows scroll"
        for y, text in enumerate(titles):
            _put(scr, y, 0, text, width, curses.A_BOLD if y == 0 else curses.A_NORMAL)
        y = len(titles) + 1
        if self.error is not None:
            _put(scr, y, 0, f"cannot read the queue folder: {self.error}", width, _red())
        elif not self.recs:
            _put(scr, y, 0, f"no queues in {_native.queue_dir()}", width, curses.A_NORMAL)
        else:
            lines = table_lines(sort_records(self.recs, self.sort))
            header, body = lines[0], lines[1:]
            _put(scr, y, 0, header[1].ljust(width), width, curses.A_REVERSE)
            room = height - y - 1
            self.offset = max(0, min(self.offset, len(body) - room))
            for i, (kind, text) in enumerate(body[self.offset : self.offset + room]):
                attr = _red() if kind == "invalid" else curses.A_DIM if kind == "detail" else 0
                _put(scr, y + 1 + i, 0, text, width, attr)
            if len(body) > room:
                more = f" lines {self.offset + 1}-{self.offset + room} of {len(body)} "
                _put(scr, 1, max(0, width - len(more) - 1), more, width, curses.A_REVERSE)
        scr.refresh()

    def key(self, ch: int) -> bool:
        """Handle a key; False to quit."""
        if ch in (ord("q"), ord("Q")):
            return False
        if ch in (ord("s"), ord("S")):
            self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        elif ch == ord("n"):
            self.sort = "name"
        elif ch == ord("r"):
            self.sort = "rate"
        elif ch == curses.KEY_DOWN:
            self.offset += 1
        elif ch == curses.KEY_UP:
            self.offset = max(0, self.offset - 1)
        elif ch == curses.KEY_NPAGE:
            self.offset += 10
        elif ch == curses.KEY_PPAGE:
            self.offset = max(0, self.offset - 10)
        elif ch == curses.KEY_HOME:
            self.offset = 0
        return True


def _red() -> int:
    return curses.color_pair(1) if curses.has_colors() else curses.A_BOLD


def _put(scr: "curses.window", y: int, x: int, text: str, width: int, attr: int) -> None:
    """Write text clipped to the screen (the last cell of the last line cannot be written
    without an error, which is ignored)."""
    if x >= width:
        return
    try:
        scr.addnstr(y, x, text, width - x, attr)
    except curses.error:
        pass


def _live(scr: "curses.window", view: _View) -> None:
    try:
        curses.curs_set(0)
    except curses.error:
        pass
    if curses.has_colors():
        try:
            curses.start_color()
            curses.use_default_colors()
            curses.init_pair(1, curses.COLOR_RED, -1)
        except curses.error:
            pass  # invalid rows are then in the default color
    scr.keypad(True)
    due = 0.0
    while True:
        now = time.monotonic()
        if now >= due:
            view.refresh()
            due = now + view.interval
        view.draw(scr)
        scr.timeout(max(1, int((due - time.monotonic()) * 1000)))
        ch = scr.getch()
        if ch == curses.KEY_RESIZE:
            curses.update_lines_cols()
            continue  # drawn again at the new size
        if ch != -1 and not view.key(ch):
            return


def run_live(interval: float, sort: str, include_windows: bool) -> None:
    """The live view until q (or Ctrl-C)."""
    view = _View(interval, sort, include_windows)
    try:
        curses.wrapper(_live, view)
    except KeyboardInterrupt:
        pass


def to_json(recs: List[Dict[str, Any]]) -> str:
    return json.dumps(recs, indent=2)
