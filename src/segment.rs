//! The segment file: create, open, validate, map, unlink.
//!
//! A new segment is built under a temporary dot-name (`O_CREAT|O_EXCL|O_NOFOLLOW`), sized,
//! mapped and initialised, and only then linked to its real name, so no opener ever sees a
//! half-written header. Opening uses `O_NOFOLLOW`, refuses files of another owner, and checks
//! magic, version, geometry and length before anything is mapped writable for use. A file that
//! fails a check is never modified.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::{self, Acquire};
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{QueueError, Result};
use crate::layout::{self, Header, Lease, Slot, DATA_OFFSET, LEASES, MAGIC, SLOT_COUNT, VERSION};
use crate::name;

/// The folder queues live in: `$SAGE_QUEUE_DIR`, else `/dev/shm`.
pub fn queue_dir() -> PathBuf {
    match std::env::var_os("SAGE_QUEUE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("/dev/shm"),
    }
}

pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

pub fn segment_path(queue_name: &str) -> PathBuf {
    queue_dir().join(name::file_name(euid(), queue_name))
}

/// An open, validated, mapped segment file.
pub struct Segment {
    pub file: File,
    map: MmapRaw,
    pub path: PathBuf,
    pub capacity: u64,
    pub dev: u64,
    pub ino: u64,
}

impl Segment {
    pub fn header(&self) -> &Header {
        // SAFETY: the mapping is at least DATA_OFFSET bytes long (checked at create/open),
        // page aligned, lives as long as `self`, and Header is repr(C) with only plain integers
        // written before publication and atomics afterwards.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    pub fn slots(&self) -> &[Slot] {
        // SAFETY: the slot table lies inside the mapping at SLOTS_OFFSET, 64-byte aligned,
        // SLOT_COUNT entries of atomics; the mapping outlives the returned borrow.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(layout::SLOTS_OFFSET) as *const Slot,
                SLOT_COUNT,
            )
        }
    }

    /// Start of the ring's `capacity` bytes.
    pub fn data(&self) -> *mut u8 {
        // SAFETY: DATA_OFFSET + capacity <= mapping length (validated), so the pointer is in
        // bounds of the mapping.
        unsafe { self.map.as_mut_ptr().add(DATA_OFFSET) }
    }

    /// The lease table (after the ring).
    pub fn leases(&self) -> &[Lease] {
        // SAFETY: the lease table lies inside the mapping at DATA_OFFSET + capacity (the file
        // is layout::file_len(capacity) long, validated), 64-byte aligned, LEASES entries of
        // atomics; the mapping outlives the returned borrow.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(DATA_OFFSET + self.capacity as usize) as *const Lease,
                LEASES,
            )
        }
    }

    /// The page holding the dead-letter queue's name (u32 length, then the bytes).
    pub fn dead_letter_page(&self) -> *mut u8 {
        // SAFETY: the page lies inside the mapping, 4096 bytes after the lease table.
        unsafe { self.data().add(self.capacity as usize + 4096) }
    }

    /// The payload bytes of lease `i` (layout::lease_bytes long).
    pub fn lease_payload(&self, i: usize) -> *mut u8 {
        assert!(i < LEASES);
        let stride = layout::lease_stride(self.capacity) as usize;
        // SAFETY: lease i's payload lies inside the mapping: reserved_len + LEASES * stride
        // is the file's length.
        unsafe { self.data().add(self.capacity as usize + 8192 + i * stride) }
    }

    /// Reserve the file's pages under the first `len` payload bytes of lease `i` (so writing
    /// them can never raise SIGBUS in a full folder). NoSpace if the folder is full.
    pub fn reserve_lease(&self, i: usize, len: u64) -> Result<()> {
        let stride = layout::lease_stride(self.capacity);
        let start = layout::reserved_len(self.capacity) + i as u64 * stride;
        let len = ((len + 4095) & !4095).min(stride);
        reserve_range(&self.file, start, len).map_err(|e| {
            if QueueError::is_no_space(&e) {
                QueueError::NoSpace {
                    reason: format!(
                        "no space in the queue folder to keep an unacknowledged message of \
                         {len} bytes ({e})"
                    ),
                }
            } else {
                QueueError::io("cannot reserve a lease", e)
            }
        })
    }

    /// Create an unpublished segment of `capacity` bytes (already rounded by
    /// `layout::round_capacity`) under a temporary name in `dir`, with its whole length
    /// reserved in the file system (so no later page fault can find the folder full).
    /// Returns the segment and its temporary path; `publish` links it to its real name.
    /// Too little space is NoSpace, checked before the file exists and again by the
    /// reservation itself; no file is left behind on any error.
    pub fn create_unpublished(
        dir: &Path,
        capacity: u64,
        mode: u32,
        max_items: u64,
    ) -> Result<(Segment, PathBuf)> {
        let len = layout::reserved_len(capacity);
        // A hopeless request fails here, without allocating anything.
        if let Ok(free) = free_bytes(dir) {
            if free < len {
                return Err(no_space(dir, capacity, len, free, None));
            }
        }
        let pid = std::process::id();
        let mut attempt = 0u32;
        let (file, tmp) = loop {
            let tmp = dir.join(format!(
                ".sq-tmp-{}-{}-{}",
                euid(),
                pid,
                nonce() ^ attempt as u64
            ));
            let res = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(mode & 0o777)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp);
            match res {
                Ok(f) => break (f, tmp),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => {
                    attempt += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(QueueError::io(
                        &format!("queue folder {} does not exist", dir.display()),
                        e,
                    ))
                }
                Err(e) if QueueError::is_no_space(&e) => {
                    let free = free_bytes(dir).unwrap_or(0);
                    return Err(no_space(dir, capacity, len, free, Some(e)));
                }
                Err(e) => return Err(QueueError::io("cannot create segment file", e)),
            }
        };
        let cleanup = |e: QueueError| {
            let _ = std::fs::remove_file(&tmp);
            e
        };
        // The umask may have removed bits the caller asked for; set the mode exactly.
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))
            .map_err(|e| cleanup(QueueError::io("cannot set segment mode", e)))?;
        // Reserve every byte (this also sets the length): a sparse file in a folder that
        // fills up would kill a later writer with SIGBUS instead of failing here.
        // The lease payloads after that stay sparse until used (Segment::reserve_lease).
        reserve_range(&file, 0, len).map_err(|e| {
            cleanup(if QueueError::is_no_space(&e) {
                let free = free_bytes(dir).unwrap_or(0);
                no_space(dir, capacity, len, free, Some(e))
            } else {
                QueueError::io("cannot size segment", e)
            })
        })?;
        file.set_len(layout::file_len(capacity))
            .map_err(|e| cleanup(QueueError::io("cannot size segment", e)))?;
        let map = map_file(&file, layout::file_len(capacity), len).map_err(|e| {
            cleanup(if QueueError::is_no_space(&e) {
                let free = free_bytes(dir).unwrap_or(0);
                no_space(dir, capacity, len, free, Some(e))
            } else {
                QueueError::io("cannot map segment", e)
            })
        })?;
        let meta = file
            .metadata()
            .map_err(|e| cleanup(QueueError::io("cannot stat segment", e)))?;
        let seg = Segment {
            file,
            map,
            path: tmp.clone(),
            capacity,
            dev: meta.dev(),
            ino: meta.ino(),
        };
        seg.init_header(capacity, max_items);
        Ok((seg, tmp))
    }

    fn init_header(&self, capacity: u64, max_items: u64) {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // SAFETY: the file is new, private to this process (not yet linked under its name),
        // freshly zeroed by ftruncate, and the identity fields are plain integers inside the
        // mapping; nobody else can read them until `publish`.
        unsafe {
            let id = self.map.as_mut_ptr() as *mut layout::Identity;
            (*id).version = VERSION;
            (*id).data_offset = DATA_OFFSET as u32;
            (*id).capacity = capacity;
            (*id).slot_count = SLOT_COUNT as u32;
            (*id).owner_uid = euid();
            (*id).creator_pid = std::process::id();
            (*id).created_unix_ms = created;
            (*id).max_items = max_items;
            (*id).tag_key = random_key();
        }
        // Each lease's generation starts at a random value, so a receipt of another queue
        // (or of an earlier queue of the same name) matches none of this queue's leases.
        let seed = seed();
        for (i, lease) in self.leases().iter().enumerate() {
            let gen = mix(seed.wrapping_add(i as u64)) >> 32;
            lease.state.store(gen << 32, Ordering::Relaxed); // FREE, no owner
            lease.pos.store(layout::NONE, Ordering::Relaxed);
        }
        for slot in self.slots() {
            slot.claim_start.store(layout::NONE, Ordering::Relaxed);
            slot.read_start.store(layout::NONE, Ordering::Relaxed);
            slot.loan_start.store(layout::NONE, Ordering::Relaxed);
            slot.pin_start.store(layout::NONE, Ordering::Relaxed);
        }
        // The magic goes last; `publish` (a link syscall) orders it before any opener's read.
        // SAFETY: as above.
        unsafe {
            let id = self.map.as_mut_ptr() as *mut layout::Identity;
            std::ptr::write_volatile(&mut (*id).magic, MAGIC);
        }
    }

    /// Link the initialised temporary file to its real name; AlreadyExists if taken.
    pub fn publish(&mut self, tmp: &Path, final_path: &Path, queue_name: &str) -> Result<()> {
        let res = std::fs::hard_link(tmp, final_path);
        let _ = std::fs::remove_file(tmp);
        match res {
            Ok(()) => {
                self.path = final_path.to_path_buf();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(QueueError::AlreadyExists {
                name: queue_name.to_string(),
            }),
            Err(e) => Err(QueueError::io("cannot publish segment", e)),
        }
    }

    /// Open and validate the segment at `path`.
    pub fn open(path: &Path, queue_name: &str, populate: bool) -> Result<Segment> {
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(QueueError::NotFound {
                    name: queue_name.to_string(),
                })
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(QueueError::corrupt(format!(
                    "{} is a symbolic link; links are never followed",
                    path.display()
                )))
            }
            Err(e) => {
                return Err(QueueError::io(
                    &format!("cannot open {}", path.display()),
                    e,
                ))
            }
        };
        let meta = file
            .metadata()
            .map_err(|e| QueueError::io("cannot stat segment", e))?;
        if !meta.file_type().is_file() {
            return Err(QueueError::corrupt(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        if meta.uid() != euid() {
            return Err(QueueError::PermissionDenied {
                reason: format!(
                    "{} belongs to uid {}, not to this user (uid {})",
                    path.display(),
                    meta.uid(),
                    euid()
                ),
            });
        }
        let len = meta.len();
        let capacity = validate(&file, len).map_err(|e| in_file(path, e))?;
        let map = map_file(
            &file,
            len,
            if populate {
                layout::reserved_len(capacity)
            } else {
                0
            },
        )
        .map_err(|e| QueueError::io(&format!("cannot map {}", path.display()), e))?;
        let seg = Segment {
            file,
            map,
            path: path.to_path_buf(),
            capacity,
            dev: meta.dev(),
            ino: meta.ino(),
        };
        // Shortened between the check above and the mapping: touching the header would
        // raise SIGBUS.
        if let Some(reason) = seg.shrunk() {
            return Err(QueueError::corrupt(reason));
        }
        seg.check_cursors().map_err(|e| in_file(path, e))?;
        Ok(seg)
    }

    /// Why the segment can no longer be used safely, if its file was shortened (by another
    /// process's ftruncate: sage-queue never does that). Touching a mapped page past the
    /// file's end raises SIGBUS, so slow paths check this (one fstat) before they touch the
    /// mapping again; a call that is already copying can still meet the signal.
    pub fn shrunk(&self) -> Option<String> {
        let want = layout::file_len(self.capacity);
        let len = match self.file.metadata() {
            Ok(m) => m.len(),
            Err(_) => return None,
        };
        (len < want).then(|| {
            format!(
                "{} was truncated to {len} bytes by another process (this queue needs {want} \
                 bytes); it can no longer be used",
                self.path.display()
            )
        })
    }

    /// Check the ring's cursors: 16-aligned and `released <= head <= tail <= released +
    /// capacity`. They only grow, so reading released, head, tail and released again (in that
    /// order) cannot see a live queue break these rules; a file that does is corrupt.
    fn check_cursors(&self) -> Result<()> {
        let h = self.header();
        let released = h.rel.released.load(Acquire);
        let head = h.cons.head.load(Acquire);
        let tail = h.prod.tail.load(Acquire);
        let released_again = h.rel.released.load(Acquire);
        let aligned = (released | head | tail) % 16 == 0;
        let ordered = released <= head
            && head <= tail
            && tail <= released_again.saturating_add(self.capacity);
        if aligned && ordered {
            Ok(())
        } else {
            Err(QueueError::corrupt(format!(
                "ring cursors out of order or unaligned (released {released}, head {head}, \
                 tail {tail}, capacity {})",
                self.capacity
            )))
        }
    }

    /// Whether `self.path` still names this segment's file (it was not unlinked or replaced).
    pub fn is_linked(&self) -> bool {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) => m.dev() == self.dev && m.ino() == self.ino,
            Err(_) => false,
        }
    }

    /// Unlink the segment's path if it still names this file.
    pub fn unlink_if_ours(&self) -> Result<bool> {
        if !self.is_linked() {
            return Ok(false);
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(QueueError::io("cannot remove segment", e)),
        }
    }
}

/// Check a candidate segment file without mapping it writable: read its identity block with
/// `pread` and compare it with the file's length. Returns the capacity.
pub fn validate(file: &File, len: u64) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    if len < DATA_OFFSET as u64 {
        return Err(QueueError::corrupt(format!(
            "file is {len} bytes, shorter than a segment header ({DATA_OFFSET} bytes)"
        )));
    }
    let mut id = [0u8; 48];
    file.read_exact_at(&mut id, 0)
        .map_err(|e| QueueError::io("cannot read segment header", e))?;
    let u64_at = |o: usize| u64::from_le_bytes(id[o..o + 8].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(id[o..o + 4].try_into().unwrap());
    if u64_at(0) != MAGIC {
        return Err(QueueError::corrupt("bad magic number"));
    }
    let version = u32_at(8);
    if version != VERSION {
        return Err(QueueError::Incompatible {
            reason: format!(
                "segment layout version {version}, this library reads version {VERSION}"
            ),
        });
    }
    let data_offset = u32_at(12) as u64;
    let capacity = u64_at(16);
    let slot_count = u32_at(24) as usize;
    if data_offset != DATA_OFFSET as u64 || slot_count != SLOT_COUNT {
        return Err(QueueError::corrupt(
            "header geometry does not match layout version 1",
        ));
    }
    if !capacity.is_power_of_two()
        || !(layout::MIN_CAPACITY..=layout::MAX_CAPACITY).contains(&capacity)
    {
        return Err(QueueError::corrupt(format!(
            "capacity {capacity} is not a power of two in range"
        )));
    }
    if len != layout::file_len(capacity) {
        return Err(QueueError::corrupt(format!(
            "file is {len} bytes, header says {}",
            layout::file_len(capacity)
        )));
    }
    Ok(capacity)
}

fn map_file(file: &File, len: u64, prefault: u64) -> io::Result<MmapRaw> {
    // The file is a regular file of exactly `len` bytes owned by this user; other processes
    // change it only through the atomic protocol. Prefaulting the first `prefault` bytes (the
    // header, slots and ring; the lease payloads after them are sparse) keeps page faults off
    // the message path.
    let map = MmapOptions::new().len(len as usize).map_raw(file)?;
    let hot = prefault.min(len) as usize;
    if hot > 0 {
        // SAFETY: [ptr, ptr + hot) lies inside the mapping just made; MADV_POPULATE_WRITE
        // only faults its pages in (older kernels refuse it: then pages fault on first use).
        unsafe {
            libc::madvise(
                map.as_mut_ptr() as *mut libc::c_void,
                hot,
                MADV_POPULATE_WRITE,
            );
        }
    }
    Ok(map)
}

/// madvise advice (Linux 5.14): fault the range's pages in, writable, without changing them.
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// `err` with the segment's path in its reason if it is NotAQueue (every NotAQueue names the
/// file).
pub fn in_file(path: &Path, err: QueueError) -> QueueError {
    match err {
        QueueError::NotAQueue { reason } => QueueError::NotAQueue {
            reason: format!("{}: {reason}", path.display()),
        },
        e => e,
    }
}

/// splitmix64's finalizer: every input bit changes about half of the output bits.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A value no other segment creation gets: the clock, the pid and a per-process count.
fn seed() -> u64 {
    static CREATED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    nonce()
        ^ (std::process::id() as u64).rotate_left(40)
        ^ mix(CREATED.fetch_add(1, Ordering::Relaxed))
}

/// 64 random bits from the kernel (getrandom), or, should it fail, a mix of `seed`: the key
/// of a segment's record tags (layout::tag).
fn random_key() -> u64 {
    let mut key = 0u64;
    // SAFETY: getrandom writes at most 8 bytes into `key`, a local u64.
    let n = unsafe { libc::getrandom((&mut key as *mut u64).cast(), 8, 0) };
    if n == 8 {
        return key;
    }
    mix(seed())
}

fn nonce() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (t >> 29)
}

/// Remove a file by path without following links (used by gc and unlink by name).
pub fn remove_path(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated path string.
    if unsafe { libc::unlink(c.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Remove the file at `path`, which failed validation, if it is a regular file of this user:
/// never a symbolic link (nor what it points to), a folder, a device, or another user's file.
pub fn remove_invalid(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(QueueError::io(
                &format!("cannot stat {}", path.display()),
                e,
            ))
        }
    };
    if !meta.file_type().is_file() {
        return Err(QueueError::corrupt(format!(
            "{} is not a regular file; only regular files are removed",
            path.display()
        )));
    }
    if meta.uid() != euid() {
        return Err(QueueError::PermissionDenied {
            reason: format!(
                "{} belongs to uid {}, not to this user (uid {}); it is not removed",
                path.display(),
                meta.uid(),
                euid()
            ),
        });
    }
    match remove_path(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(QueueError::io(
            &format!("cannot remove {}", path.display()),
            e,
        )),
    }
}

/// Remove temporary files of segments whose creator died between creating and publishing.
pub fn remove_stale_temp_files() {
    let prefix = format!(".sq-tmp-{}-", euid());
    let Ok(entries) = std::fs::read_dir(queue_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let f = e.file_name();
        let Some(rest) = f.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = remove_path(&e.path());
        }
    }
}

/// Bytes an unprivileged file in `dir` can still take (statvfs: available blocks).
fn free_bytes(dir: &Path) -> io::Result<u64> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated path; `st` is a plain C struct that statvfs fills
    // (all-zero is a valid value to start from).
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        st
    };
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Allocate `len` bytes of `file` from `start` (and make it at least that long).
fn reserve_range(file: &File, start: u64, len: u64) -> io::Result<()> {
    let big = |_| io::Error::from_raw_os_error(libc::EFBIG);
    let start = libc::off_t::try_from(start).map_err(big)?;
    let len = libc::off_t::try_from(len).map_err(big)?;
    loop {
        // SAFETY: the descriptor is open for the life of `file`; posix_fallocate touches no
        // memory of this process.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), start, len) };
        match rc {
            0 => return Ok(()),
            libc::EINTR => continue,
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// The NoSpace error of a queue of `capacity` bytes (a file of `len` bytes) in `dir`.
fn no_space(dir: &Path, capacity: u64, len: u64, free: u64, err: Option<io::Error>) -> QueueError {
    let cause = match err {
        Some(e) => format!(" ({e})"),
        None => String::new(),
    };
    QueueError::NoSpace {
        reason: format!(
            "not enough space in {} for a queue of {capacity} bytes: its file needs {len} \
             bytes and {free} bytes are free{cause}",
            dir.display()
        ),
    }
}
