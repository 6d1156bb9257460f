//! Fault injection for tests: with the `fault-injection` feature, a process can be told to stop
//! itself with SIGSTOP at one protocol step (by `stop_at`, or by the environment variable
//! `SAGE_QUEUE_FAULT=<Step name>` read at the first hook), so a test can SIGKILL it exactly
//! there. Without the feature every hook is empty and costs nothing.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    /// A producer won the tail CAS, before writing any header.
    Claimed = 1,
    /// A producer wrote its WRITING headers, before the payload.
    Written = 2,
    /// A consumer won the head CAS, before copying out.
    Taken = 3,
    /// The release-lock holder is about to zero consumed records.
    Releasing = 4,
    /// In a bounded queue, the holder of the bound lock claimed (and wrote its WRITING
    /// headers), took, or is turning a dead producer's record DEAD, and has not updated the
    /// count yet.
    Counting = 5,
    /// A producer holds an open loan (its WRITING record), before committing it.
    Loaned = 6,
    /// A consumer pinned a view (its record stays COMMITTED below the head), before release.
    Pinned = 7,
    /// An acked get copied records into its TAKING leases, before the head CAS.
    LeaseCopied = 8,
    /// An acked get made its leases HELD, before marking their records CONSUMED.
    Leased = 9,
    /// A lease is MOVING (nacked, timed out or its owner dead), before it is READY again,
    /// dead-lettered or dropped.
    Moving = 10,
    /// A get took a READY lease (HELD or MOVING), before copying it out.
    Serving = 11,
}

#[cfg(feature = "fault-injection")]
mod imp {
    use super::Step;
    use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

    const UNSET: u8 = u8::MAX;
    static STOP_AT: AtomicU8 = AtomicU8::new(UNSET);

    /// Stop this process (SIGSTOP) when it reaches `step`; None disarms.
    pub fn stop_at(step: Option<Step>) {
        STOP_AT.store(step.map_or(0, |s| s as u8), Relaxed);
    }

    pub fn hook(step: Step) {
        let mut v = STOP_AT.load(Relaxed);
        if v == UNSET {
            v = match std::env::var("SAGE_QUEUE_FAULT").as_deref() {
                Ok("Claimed") => Step::Claimed as u8,
                Ok("Written") => Step::Written as u8,
                Ok("Taken") => Step::Taken as u8,
                Ok("Releasing") => Step::Releasing as u8,
                Ok("Counting") => Step::Counting as u8,
                Ok("Loaned") => Step::Loaned as u8,
                Ok("Pinned") => Step::Pinned as u8,
                Ok("LeaseCopied") => Step::LeaseCopied as u8,
                Ok("Leased") => Step::Leased as u8,
                Ok("Moving") => Step::Moving as u8,
                Ok("Serving") => Step::Serving as u8,
                _ => 0,
            };
            STOP_AT.store(v, Relaxed);
        }
        if v == step as u8 {
            // SAFETY: raising a signal at the calling process has no memory-safety preconditions.
            unsafe { libc::raise(libc::SIGSTOP) };
        }
    }
}

#[cfg(feature = "fault-injection")]
pub use imp::{hook, stop_at};

#[cfg(not(any(feature = "fault-injection", loom)))]
#[inline(always)]
pub fn hook(_step: Step) {}

/// In the loom model (src/loom_tests.rs) a thread can die at a step, as a process killed
/// there: `die_at(Some(step))` makes its hook at that step unwind with `Died`, which the model
/// catches at the top of the thread (and then marks the thread's slot dead).
#[cfg(all(loom, not(feature = "fault-injection")))]
mod model {
    use super::Step;
    use std::cell::Cell;

    /// The unwinding payload of a thread that died at a step.
    pub struct Died;

    loom::thread_local! {
        static DIE_AT: Cell<Option<Step>> = Cell::new(None);
    }

    /// Die (unwind with `Died`) at `step` in this thread; None: never.
    pub fn die_at(step: Option<Step>) {
        DIE_AT.with(|d| d.set(step));
    }

    /// Unwind with `Died` (without the panic hook's message).
    pub fn die() -> ! {
        std::panic::resume_unwind(Box::new(Died))
    }

    pub fn hook(step: Step) {
        if DIE_AT.with(|d| d.get()) == Some(step) {
            die();
        }
    }
}

#[cfg(all(loom, not(feature = "fault-injection")))]
pub use model::{die, die_at, hook, Died};
