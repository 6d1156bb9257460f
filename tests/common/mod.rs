//! Shared setup for the Rust integration tests: a private queue folder and unique names.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

static INIT: Once = Once::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Point SAGE_QUEUE_DIR at a fresh folder for this test binary (set once, before any thread
/// reads it) and return a queue name unique in this process.
pub fn unique(prefix: &str) -> String {
    INIT.call_once(|| {
        let dir = format!("/dev/shm/sq-rust-tests-{}", std::process::id());
        std::fs::create_dir_all(&dir).unwrap();
        std::env::set_var("SAGE_QUEUE_DIR", &dir);
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe { libc::atexit(remove_dir) };
    });
    format!("{prefix}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

extern "C" fn remove_dir() {
    // Only the process that created the folder removes it (forked children exit with _exit).
    let _ = std::fs::remove_dir_all(format!("/dev/shm/sq-rust-tests-{}", std::process::id()));
}

pub fn dir() -> String {
    std::env::var("SAGE_QUEUE_DIR").unwrap()
}

/// A small deterministic generator (xorshift64*), so failures replay.
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Payload bytes derived from (seed, len), checkable on the other side.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1);
    (0..len).map(|_| r.next_u64() as u8).collect()
}

/// Put `msgs` as one batch in the table layout (u32 lengths, concatenated payloads).
pub fn put_table(
    q: &sage_queue::SageQueue,
    msgs: &[Vec<u8>],
    timeout: f64,
) -> Result<u32, sage_queue::QueueError> {
    let (lengths, payloads) = sage_queue::encode_table(msgs);
    q.put_batch(&lengths, &payloads, timeout)
}

/// The messages of a taken batch (payloads, u32 lengths, u32 count), copied out.
pub fn taken(buf: &[u8]) -> Vec<Vec<u8>> {
    sage_queue::parse_taken(buf)
        .expect("a well-formed taken batch")
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect()
}
