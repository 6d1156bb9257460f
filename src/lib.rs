//! sage-queue: a shared-memory multi-producer multi-consumer queue of variable-size messages
//! between processes on one machine.
//!
//! A message's path: `msg_put` (message.rs, the UDL's message path) -> `SageQueue::put_pair`
//! (queue.rs) -> `Ring::try_put` (ring.rs: claim, write,
//! commit) -> `wait::wake` ... `wait::sleep_unless` -> `Ring::try_get` (take, copy out,
//! CONSUMED) -> `Ring::release` (zero, advance) -> `SageQueue::get_into` copies it into the
//! thread's view -> `msg_take` returns its length.
//! Module map: error (typed errors), name (names and file names), layout (bytes of a segment),
//! segment (the file and its mapping), attach (slots and liveness), ring (the protocol),
//! bound (the optional limit on the number of messages),
//! wait (spin and futex), queue (the handle the UDL exposes), admin (statistics, listing,
//! removal, gc), batch (the one batch format), registry (handles by id), message (the
//! id-addressed message path every language takes), watch (async waits without a thread per
//! waiter), ready_fd (those waits driven by an event loop's eventfd: Python), fault
//! (test-only hooks).
//!
//! Built with `--cfg loom` (tests only), the crate is the protocol core checked by loom
//! (loom_tests): its shared atomics are loom's and the queue handle and FFI are left out.

// Under loom, what only the handle and the FFI use is unused.
#![cfg_attr(loom, allow(dead_code))]

#[cfg(not(loom))]
mod admin;
mod attach;
#[cfg(not(loom))]
mod batch;
mod bound;
mod error;
mod fault;
mod layout;
mod lease;
#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(not(loom))]
mod message;
mod name;
#[cfg(not(loom))]
mod queue;
#[cfg(not(loom))]
mod ready_fd;
#[cfg(not(loom))]
mod registry;
mod ring;
mod segment;
#[cfg(not(loom))]
mod uring;
mod wait;
#[cfg(not(loom))]
mod watch;

#[cfg(not(loom))]
pub use admin::{
    collect_garbage, list_queues, max_message_size, queue_dir, queue_stats, unlink_queue,
    validate_name, QueueInfo, QueueStats,
};
#[cfg(not(loom))]
pub use batch::{encode_table, parse_taken};
pub use error::QueueError;
#[cfg(feature = "fault-injection")]
pub use fault::{stop_at, Step};
#[cfg(not(loom))]
pub use message::{
    msg_abort, msg_ack, msg_commit, msg_error, msg_line_state, msg_loan, msg_nack, msg_pin,
    msg_pin_address, msg_put, msg_put_batch, msg_ready_async, msg_receipt, msg_take,
    msg_take_acked, msg_take_acked_batch, msg_take_batch, msg_try_put, msg_try_take, msg_unpin,
    msg_view_address, msg_view_capacity, FAILED, NOTHING, READY_DATA, READY_SPACE, READY_TASKS,
};
#[cfg(not(loom))]
pub use queue::{AckPolicy, AckedMessage, SageQueue};
#[cfg(not(loom))]
pub use ready_fd::ReadyFd;

#[cfg(not(loom))]
uniffi::include_scaffolding!("sage_queue");
