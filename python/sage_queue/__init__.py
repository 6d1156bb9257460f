"""sage_queue: a shared-memory multi-producer multi-consumer queue between processes of one
Linux machine, with the interface of ``queue.Queue``.

    from sage_queue import SageQueue
    q = SageQueue("jobs")          # create or attach by name, from any process
    q.put({"id": 1})
    q.get(timeout=1.0)
"""

from queue import Empty, Full

from .acks import BatchReceipt, Receipt
from .errors import (
    BatchFull,
    DeserializationError,
    IncompatibleQueue,
    InvalidArgument,
    InvalidQueueName,
    MessageTooLarge,
    NotAQueueError,
    QueueClosed,
    QueueExists,
    QueueIOError,
    QueueNoSpace,
    QueueNotFound,
    QueueNotLocal,
    QueuePermissionError,
    QueueUnavailable,
    SageQueueError,
    SerializationError,
    StaleReceipt,
)
from .queue import (
    DEFAULT_MAXSIZE,
    SageQueue,
    cleanup_invalid_queues,
    destroy_queue,
    list_all_sage_queues,
    max_message_size,
    queue_dir,
)
from .reference import SageQueueRef
from .serializers import PickleSerializer, RawSerializer

__all__ = [
    "DEFAULT_MAXSIZE",
    "BatchFull",
    "DeserializationError",
    "Empty",
    "Full",
    "IncompatibleQueue",
    "InvalidArgument",
    "InvalidQueueName",
    "MessageTooLarge",
    "NotAQueueError",
    "PickleSerializer",
    "QueueClosed",
    "QueueExists",
    "QueueIOError",
    "QueueNoSpace",
    "StaleReceipt",
    "Receipt",
    "BatchReceipt",
    "QueueNotFound",
    "QueueNotLocal",
    "QueuePermissionError",
    "QueueUnavailable",
    "RawSerializer",
    "SageQueue",
    "SageQueueError",
    "SageQueueRef",
    "SerializationError",
    "cleanup_invalid_queues",
    "destroy_queue",
    "list_all_sage_queues",
    "max_message_size",
    "queue_dir",
]
