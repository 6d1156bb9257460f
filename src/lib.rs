//! sage-queue: a shared-memory multi-producer multi-consumer queue of variable-size messages
//! between processes on one machine.
//!
//! A message's path: `SageQueue::put` (queue.rs) -> `Ring::try_put` (ring.rs: claim, write,
//! commit) -> `wait::wake` ... `wait::sleep_unless` -> `Ring::try_get` (take, copy out,
//! CONSUMED) -> `Ring::release` (zero, advance) -> `SageQueue::get` returns the bytes.
//! Module map: error (typed errors), name (names and file names), layout (bytes of a segment),
//! segment (the file and its mapping), attach (slots and liveness), ring (the protocol),
//! bound (the optional limit on the number of messages),
//! wait (spin and futex), queue (the handle the UDL exposes), admin (statistics, listing,
//! removal, gc), batch (the batch layouts), registry (handles by id for raw_* calls), fault
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
#[cfg(all(test, loom))]
mod loom_tests;
mod name;
#[cfg(not(loom))]
mod queue;
#[cfg(not(loom))]
mod registry;
mod ring;
mod segment;
mod wait;

#[cfg(not(loom))]
pub use admin::{
    collect_garbage, list_queues, max_message_size, queue_dir, unlink_queue, validate_name,
    QueueInfo, QueueStats,
};
#[cfg(not(loom))]
pub use batch::parse_frames;
pub use error::QueueError;
#[cfg(feature = "fault-injection")]
pub use fault::{stop_at, Step};
#[cfg(not(loom))]
pub use queue::SageQueue;
#[cfg(not(loom))]
pub use registry::{
    raw_get, raw_get_batch, raw_get_batch_view, raw_get_many_view, raw_get_view, raw_put,
    raw_put_batch, raw_put_many, raw_put_pair, raw_try_get_view, raw_try_put_pair,
    raw_view_address, raw_view_capacity,
};

#[cfg(not(loom))]
uniffi::include_scaffolding!("sage_queue");
