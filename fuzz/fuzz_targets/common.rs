// Shared setup: a private queue folder for this fuzz process.
use std::path::PathBuf;
use std::sync::OnceLock;

pub fn queue_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("SAGE_QUEUE_FUZZ_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("sq-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create fuzz queue dir");
        // Set before any queue call, in the fuzzer's one thread.
        std::env::set_var("SAGE_QUEUE_DIR", &dir);
        dir
    })
}

#[allow(dead_code)]
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc_geteuid() }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
