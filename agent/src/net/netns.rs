//! Named network namespaces, the `ip netns` way: an empty file under [`NETNS_DIR`] with the
//! namespace bind-mounted on it keeps the namespace alive without any process in it.
//!
//! `/run/netns` is made a shared mount point (as `ip netns add` does), so that the unmount of a
//! task's namespace also reaches the mount namespaces of other tasks (which are slaves of the
//! host's), and a deleted namespace is really freed.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where named namespaces live (iproute2's `NETNS_RUN_DIR`).
pub const NETNS_DIR: &str = "/run/netns";

pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::new(ErrorKind::InvalidInput, "NUL in path"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Creates [`NETNS_DIR`] and makes it a shared mount point, once per process.
fn prepare_dir() -> io::Result<()> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return Ok(());
    }
    fs::create_dir_all(NETNS_DIR)?;
    let dir = cstring(Path::new(NETNS_DIR))?;
    let none = c"none";
    // SAFETY: mount(2) with valid NUL-terminated strings; no memory is handed over.
    unsafe {
        let shared = || {
            libc::mount(none.as_ptr(), dir.as_ptr(), none.as_ptr(), libc::MS_SHARED | libc::MS_REC, std::ptr::null())
        };
        if shared() == -1 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINVAL) {
                return Err(err);
            }
            // Not a mount point yet: bind it onto itself first.
            check(libc::mount(
                dir.as_ptr(),
                dir.as_ptr(),
                none.as_ptr(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
            check(shared())?;
        }
    }
    *done = true;
    Ok(())
}

/// Creates the network namespace `name` (empty but for a down `lo`) and returns its path. Fails
/// with `AlreadyExists` if the name is taken.
pub fn create(name: &str) -> io::Result<PathBuf> {
    prepare_dir()?;
    let path = path_of(name);
    OpenOptions::new().write(true).create_new(true).mode(0o444).open(&path)?;
    let target = cstring(&path)?;
    // unshare(CLONE_NEWNET) moves only the calling thread; a thread of its own keeps the
    // agent's threads where they are. The bind mount holds the namespace after the thread ends.
    let made = std::thread::Builder::new().name("atoll-netns".into()).spawn(move || -> io::Result<()> {
        // SAFETY: plain system calls with valid NUL-terminated strings.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNET))?;
            check(libc::mount(
                c"/proc/thread-self/ns/net".as_ptr(),
                target.as_ptr(),
                c"none".as_ptr(),
                libc::MS_BIND,
                std::ptr::null(),
            ))
        }
    })?;
    let result = made.join().unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")));
    if let Err(e) = result {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Unmounts and removes a named namespace; a missing one is fine. The namespace itself goes
/// away with the last process or interface in it.
pub fn delete(path: &Path) -> io::Result<()> {
    let target = cstring(path)?;
    // SAFETY: umount2 with a valid NUL-terminated string.
    let ret = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    if ret == -1 {
        let err = io::Error::last_os_error();
        // EINVAL: not a mount point (a creation that failed half-way); ENOENT: gone.
        if !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
            return Err(err);
        }
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Names of the namespaces under [`NETNS_DIR`] that start with `prefix`, sorted.
pub fn list(prefix: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Runs `f` on a new thread that has joined the network namespace `netns` (sockets it creates
/// belong to that namespace for their whole life).
pub fn run_in<T: Send + 'static>(netns: &File, f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    let fd = netns.try_clone()?;
    let thread = std::thread::Builder::new().name("atoll-setns".into()).spawn(move || {
        // SAFETY: setns on a descriptor we own.
        check(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) })?;
        f()
    })?;
    thread.join().unwrap_or_else(|_| Err(io::Error::other("the setns thread panicked")))
}

/// Opens a namespace file for [`run_in`] or `setns`.
pub fn open(path: &Path) -> io::Result<File> {
    File::open(path)
}
