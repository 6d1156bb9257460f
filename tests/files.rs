//! Files at a queue's path that are not queues: every NotAQueue names the file, nothing
//! removes such a file by default, `unlink_queue(name, force=true)` and
//! `collect_garbage(include_invalid=true)` remove it when it is a regular file of this user,
//! and never a symbolic link (or its target) or another user's file. A test binary of its own:
//! gc with include_invalid would remove other tests' deliberately invalid files.

mod common;

use common::*;
use sage_queue::{collect_garbage, unlink_queue, QueueError, SageQueue};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn path_of(name: &str) -> String {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    format!("{}/sq-{uid}-{name}", dir())
}

#[test]
fn invalid_files_are_removed_only_when_asked() {
    // A zero-byte file and a file of garbage where queues would be.
    let empty = unique("empty");
    let garbage = unique("garbage");
    std::fs::write(path_of(&empty), b"").unwrap();
    std::fs::write(path_of(&garbage), b"not a queue".repeat(100)).unwrap();
    for name in [&empty, &garbage] {
        let path = path_of(name);
        for err in [
            SageQueue::open(name, true).err().unwrap(),
            SageQueue::open_or_create(name, 4096, 0o600, true, 0)
                .err()
                .unwrap(),
            unlink_queue(name, false).err().unwrap(),
        ] {
            assert!(
                matches!(&err, QueueError::NotAQueue { reason } if reason.contains(&path)),
                "{err:?}"
            );
        }
        assert!(Path::new(&path).exists(), "removed without force");
    }
    // gc without include_invalid keeps them; a valid unused queue goes.
    let kept = unique("kept");
    drop(SageQueue::create(&kept, 4096, 0o600, false, 0).unwrap());
    let removed = collect_garbage(false).unwrap();
    assert_eq!(removed, vec![kept.clone()]);
    assert!(Path::new(&path_of(&empty)).exists());
    assert!(Path::new(&path_of(&garbage)).exists());

    // force removes the zero-byte file; gc with include_invalid the other one.
    unlink_queue(&empty, true).unwrap();
    assert!(!Path::new(&path_of(&empty)).exists());
    let removed = collect_garbage(true).unwrap();
    assert_eq!(removed, vec![garbage.clone()]);
    assert!(!Path::new(&path_of(&garbage)).exists());

    // A segment of another layout version: force removes it, gc keeps it.
    let newer = unique("newer");
    let q = SageQueue::create(&newer, 4096, 0o600, false, 0).unwrap();
    let path = q.path();
    drop(q);
    let mut bytes = std::fs::read(&path).unwrap();
    // The layout version (the u32 after the magic), one ahead of this library's.
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    bytes[8..12].copy_from_slice(&(version + 1).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        unlink_queue(&newer, false),
        Err(QueueError::Incompatible { .. })
    ));
    assert_eq!(collect_garbage(true).unwrap(), Vec::<String>::new());
    assert!(Path::new(&path).exists());
    unlink_queue(&newer, true).unwrap();
    assert!(!Path::new(&path).exists());

    // A symbolic link at a queue's path: neither it nor its target is ever removed.
    let link = unique("link");
    let target = format!("{}/target-{link}", dir());
    std::fs::write(&target, b"secret").unwrap();
    std::os::unix::fs::symlink(&target, path_of(&link)).unwrap();
    let err = unlink_queue(&link, true).err().unwrap();
    assert!(
        matches!(&err, QueueError::NotAQueue { reason } if reason.contains(&path_of(&link))),
        "{err:?}"
    );
    assert_eq!(collect_garbage(true).unwrap(), Vec::<String>::new());
    assert!(std::fs::symlink_metadata(path_of(&link)).is_ok());
    assert_eq!(std::fs::read(&target).unwrap(), b"secret");
    std::fs::remove_file(path_of(&link)).unwrap();
    std::fs::remove_file(&target).unwrap();

    // Another user's file named like one of ours (only root can make one here).
    let foreign = unique("foreign");
    let path = path_of(&foreign);
    std::fs::write(&path, b"someone else's").unwrap();
    let c = std::ffi::CString::new(path.clone()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::chown(c.as_ptr(), 65534, 65534) } == 0 {
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), 65534);
        assert!(matches!(
            unlink_queue(&foreign, true),
            Err(QueueError::PermissionDenied { .. })
        ));
        assert_eq!(collect_garbage(true).unwrap(), Vec::<String>::new());
        assert!(Path::new(&path).exists());
    }
    std::fs::remove_file(&path).unwrap();
}
