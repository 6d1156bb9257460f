//! Fault injection for tests: with the `fault-injection` feature, a process can be told (by the
//! environment variable `SAGE_QUEUE_FAULT=<step>`) to stop itself with SIGSTOP at one protocol
//! step, so a test can SIGKILL it exactly there. Without the feature every hook is empty.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A producer claimed space and wrote its WRITING headers, before the payload.
    Written,
    /// A consumer won the head CAS, before copying out.
    Taken,
    /// The release-lock holder is about to zero consumed records.
    Releasing,
}

#[cfg(feature = "fault-injection")]
pub fn hook(step: Step) {
    use std::sync::OnceLock;
    static WANTED: OnceLock<Option<String>> = OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var("SAGE_QUEUE_FAULT").ok());
    if wanted.as_deref() == Some(&format!("{step:?}")) {
        // SAFETY: raising a signal at the calling process has no memory-safety preconditions.
        unsafe { libc::raise(libc::SIGSTOP) };
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn hook(_step: Step) {}
