//! A queue folder with too little space: creation reserves the whole segment or fails with
//! NoSpace (naming the folder, the bytes asked for and the bytes free) and leaves no file, and
//! a queue that was created can be filled completely even when the folder is full (no
//! SIGBUS). The folder is a 16 MiB tmpfs this test mounts, so it needs root (CAP_SYS_ADMIN);
//! without it the test fails and says so. One test function: SAGE_QUEUE_DIR is process-wide.

use sage_queue::{max_message_size, QueueError, SageQueue};
use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A tmpfs of `size` mounted on a fresh folder, unmounted and removed on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = std::env::temp_dir().join(format!("sq-space-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = |s: &str| CString::new(s).unwrap();
        let target = c(dir.to_str().unwrap());
        let opts = c(&format!("size={size},mode=0700"));
        // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c("tmpfs").as_ptr(),
                target.as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                opts.as_ptr() as *const libc::c_void,
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            let _ = std::fs::remove_dir(&dir);
            panic!(
                "cannot mount a {size} tmpfs on {}: {err}. This test needs root (CAP_SYS_ADMIN) \
                 to make a small folder that fills up; it does not skip, because then nothing \
                 would check that a full folder cannot crash a queue.",
                dir.display()
            );
        }
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.0.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Run `f` in a forked child; true if it returned true.
fn in_child(f: impl FnOnce() -> bool) -> bool {
    // SAFETY: the child runs `f` and leaves with _exit; this binary has a single test, so no
    // other test thread holds a lock the child could need.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(false);
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: reaping our own child with a valid status pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

#[test]
fn a_small_folder_refuses_big_queues_and_never_crashes() {
    let fs = Tmpfs::mount("16m");
    let dir = fs.0.clone();
    std::env::set_var("SAGE_QUEUE_DIR", &dir);

    // 64 MiB cannot fit a 16 MiB folder: a typed error that says why, and no file.
    let err = SageQueue::create("big", 64 << 20, 0o600, true, 0)
        .err()
        .expect("a 64 MiB queue in a 16 MiB folder must fail");
    let QueueError::NoSpace { reason } = &err else {
        panic!("expected NoSpace, got {err:?}");
    };
    assert!(reason.contains(dir.to_str().unwrap()), "{reason}");
    assert!(reason.contains(&(64u64 << 20).to_string()), "{reason}");
    assert!(reason.contains("bytes are free"), "{reason}");
    assert_eq!(files_in(&dir), Vec::<String>::new());
    let err = SageQueue::open_or_create("big", 64 << 20, 0o600, true, 0)
        .err()
        .unwrap();
    assert!(matches!(err, QueueError::NoSpace { .. }), "{err:?}");
    assert_eq!(files_in(&dir), Vec::<String>::new());

    // Above the largest capacity: refused, not clamped; max_message_size saturates.
    let err = SageQueue::create("huge", 1 << 41, 0o600, true, 0)
        .err()
        .unwrap();
    assert!(
        matches!(&err, QueueError::InvalidArgument { reason } if reason.contains("1 TiB")),
        "{err:?}"
    );
    assert_eq!(max_message_size(1 << 41), max_message_size(1 << 40));
    assert_eq!(files_in(&dir), Vec::<String>::new());

    // The pre-check passes but the reservation fails (a file size limit of 1 MiB): NoSpace
    // again, and the temporary file is removed.
    assert!(
        in_child(|| {
            // SAFETY: ignoring SIGXFSZ (so exceeding the limit is an error, not death) and
            // lowering this child's own file size limit.
            unsafe {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let lim = libc::rlimit {
                    rlim_cur: 1 << 20,
                    rlim_max: 1 << 20,
                };
                libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            }
            matches!(
                SageQueue::create("limited", 4 << 20, 0o600, true, 0),
                Err(QueueError::NoSpace { .. })
            )
        }),
        "a failed reservation must be NoSpace"
    );
    assert_eq!(files_in(&dir), Vec::<String>::new());

    // A 4 MiB queue fits. Then another file takes every byte left in the folder; the queue's
    // space was reserved at creation, so filling the whole ring must work.
    let q = SageQueue::create("fits", 4 << 20, 0o600, true, 0).unwrap();
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![1u8; 64 << 10];
    let mut filled = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => filled += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(filled > 8 << 20, "the filler took only {filled} bytes");
    let msg = vec![7u8; 4000];
    let mut n = 0u64;
    loop {
        match q.put(&msg, 0.0) {
            Ok(()) => n += 1,
            Err(QueueError::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(n, (4 << 20) / 4016, "the ring was not filled completely");
    for _ in 0..n {
        assert_eq!(q.get(0.0).unwrap(), msg);
    }
    // Another queue cannot be made now.
    assert!(matches!(
        SageQueue::create("more", 4096, 0o600, true, 0),
        Err(QueueError::NoSpace { .. })
    ));
    drop(q);
    drop(f);
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(files_in(&dir), Vec::<String>::new());
}
