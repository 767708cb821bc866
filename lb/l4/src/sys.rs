//! The few kernel interfaces aya 0.14 does not wrap: link inspection, in-place program
//! replacement and forced detach of links (`bpf(2)`), mapping an array map, bpffs.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::ptr::NonNull;

// `enum bpf_cmd` (include/uapi/linux/bpf.h).
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_LINK_DETACH: libc::c_long = 34;

// `enum bpf_link_type`.
pub(crate) const BPF_LINK_TYPE_CGROUP: u32 = 3;
pub(crate) const BPF_LINK_TYPE_TCX: u32 = 11;

/// `BPF_FS_MAGIC` (statfs f_type of a bpffs).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a #[repr(C)] prefix of `union bpf_attr` for `cmd`, zero-initialised
    // beyond the fields set; the kernel copies at most `size_of::<T>()` bytes.
    let ret = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr).cast::<libc::c_void>(), size_of::<T>() as u32)
    };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Opens a pinned object (link, map or program).
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct Attr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    let path = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = Attr { pathname: path.as_ptr() as u64, bpf_fd: 0, file_flags: 0, path_fd: 0, _pad: 0 };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: BPF_OBJ_GET returned a new file descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether `fd` is a BPF link (`anon_inode:bpf-link`), not a map or a program.
pub(crate) fn is_link(fd: BorrowedFd<'_>) -> bool {
    fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .is_ok_and(|target| target.as_os_str().as_bytes() == b"anon_inode:bpf-link")
}

/// What a link is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinkInfo {
    pub(crate) link_type: u32,
    pub(crate) prog_id: u32,
    /// Cgroup links: the cgroup's id (0 once the cgroup is gone). tcx links: the interface
    /// index (0 once the interface is gone).
    pub(crate) target: u64,
    pub(crate) attach_type: u32,
}

pub(crate) fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    #[repr(C)]
    struct Attr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // `struct bpf_link_info`: type, id, prog_id, then a union aligned to 8 bytes.
    let mut info = [0u64; 32];
    let mut attr =
        Attr { bpf_fd: link.as_raw_fd() as u32, info_len: size_of_val(&info) as u32, info: info.as_mut_ptr() as u64 };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let link_type = info[0] as u32;
    let prog_id = info[1] as u32;
    let (target, attach_type) = match link_type {
        // union { struct { __u64 cgroup_id; __u32 attach_type; } cgroup; ... }
        BPF_LINK_TYPE_CGROUP => (info[2], info[3] as u32),
        // union { struct { __u32 ifindex; __u32 attach_type; } tcx; ... }
        BPF_LINK_TYPE_TCX => (info[2] & 0xffff_ffff, (info[2] >> 32) as u32),
        _ => (0, 0),
    };
    Ok(LinkInfo { link_type, prog_id, target, attach_type })
}

/// Atomically replaces the program of an attached link (no moment without a program).
pub(crate) fn link_update(link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    #[repr(C)]
    struct Attr {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }
    let mut attr =
        Attr { link_fd: link.as_raw_fd() as u32, new_prog_fd: program.as_raw_fd() as u32, flags: 0, old_prog_fd: 0 };
    bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

/// Detaches a link now, whoever else holds it (a stale loader, a pin).
pub(crate) fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    #[repr(C)]
    struct Attr {
        link_fd: u32,
        _pad: u32,
    }
    let mut attr = Attr { link_fd: link.as_raw_fd() as u32, _pad: 0 };
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

/// The id of a cgroup v2 directory (its inode number), as cgroup links report it.
pub(crate) fn cgroup_id(path: &Path) -> io::Result<u64> {
    Ok(fs::metadata(path)?.ino())
}

pub(crate) fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        index => Ok(index),
    }
}

fn fs_type(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: a NUL-terminated path and a statfs buffer.
    if unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs succeeded.
    let f_type = unsafe { st.assume_init() }.f_type;
    #[allow(clippy::unnecessary_cast, reason = "f_type's type differs between architectures")]
    Ok(f_type as i64)
}

/// `CGROUP2_SUPER_MAGIC` from linux/magic.h.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

pub(crate) fn is_cgroup2(path: &Path) -> bool {
    path.is_dir() && fs_type(path).is_ok_and(|t| t == CGROUP2_SUPER_MAGIC)
}

pub(crate) fn is_bpffs(path: &Path) -> bool {
    fs_type(path).is_ok_and(|t| t == BPF_FS_MAGIC)
}

/// Mounts bpffs at `/sys/fs/bpf` (`mount -t bpf bpf /sys/fs/bpf`).
pub(crate) fn mount_bpffs(at: &Path) -> io::Result<()> {
    fs::create_dir_all(at)?;
    let target = CString::new(at.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: NUL-terminated strings; no data.
    let ret = unsafe { libc::mount(c"bpf".as_ptr(), target.as_ptr(), c"bpf".as_ptr(), 0, std::ptr::null()) };
    if ret != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// An exclusive `flock` on a directory, released on drop.
pub(crate) struct DirLock(#[allow(dead_code, reason = "held for its lock")] fs::File);

pub(crate) fn lock_dir(path: &Path) -> io::Result<DirLock> {
    let dir = fs::File::open(path)?;
    // SAFETY: a valid descriptor; blocks until no other loader holds the lock.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(DirLock(dir))
}

/// `memlock` of a map file descriptor (`/proc/self/fdinfo`): the kernel memory it holds.
pub(crate) fn map_memlock(fd: BorrowedFd<'_>) -> Option<u64> {
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse().ok())
}

/// A shared, writable mapping of an mmapable BPF array map.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; access goes through `&self`/`&mut self` of the
// owner, and the kernel side only reads it.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub(crate) fn new(fd: impl AsFd, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh shared mapping of `len` bytes of the map's value area.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))?, len })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The page size, for rounding mappings.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as usize } else { 4096 }
}
