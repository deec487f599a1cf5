//! The pipes that stand in for stdout and stderr, so that a closed or broken reader cannot
//! stop the node.
//!
//! A logger that unwraps its writes (femme does), and `println!`, panic once whoever reads the
//! node's output goes away (a closed terminal, a log pipe whose reader died): every later log
//! line panics in the thread that logged it: the writer, a request, or the signal thread,
//! which then no longer shuts the node down. So fds 1 and 2 are pointed at pipes the node owns,
//! and a pump thread per pipe copies what arrives to the original output for as long as that
//! accepts it, then discards. Writes from the node never fail; if the reader is merely slow,
//! logging waits as it would have anyway.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A guarded fd: the original it pumps to (to put back at exit) and the pump thread.
struct Pump {
    fd: libc::c_int,
    original: Option<RawFd>,
    thread: JoinHandle<()>,
}

static PUMPS: Mutex<Vec<Pump>> = Mutex::new(Vec::new());

/// Puts the pumps in front of fds 1 and 2.
pub fn start() {
    for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        if let Err(e) = pump(fd) {
            // Without the pump the node still runs; only a later broken pipe would hurt.
            eprintln!("diststore: cannot guard fd {fd} against a closed reader: {e}");
        }
    }
}

/// Before the process exits: points fds 1 and 2 back at their originals and waits (briefly)
/// for the pumps to pass on what is still in their pipes, so the last lines (an error that
/// stops the node, "shutting down") are not lost.
pub fn finish() {
    let pumps = std::mem::take(&mut *PUMPS.lock().unwrap_or_else(|e| e.into_inner()));
    for Pump { fd, original, thread: pump } in pumps {
        // SAFETY: dup2 onto our own fd; the pipe's last write end closes, so the pump sees EOF.
        // Without an original (it was closed), /dev/null takes its place.
        unsafe {
            match original {
                Some(o) => libc::dup2(o, fd),
                None => {
                    let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    let r = libc::dup2(null, fd);
                    libc::close(null);
                    r
                }
            };
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while !pump.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if pump.is_finished() {
            let _ = pump.join();
        }
    }
}

/// Replaces `fd` with the write end of a new pipe and starts a thread that copies the pipe to
/// what `fd` was.
fn pump(fd: libc::c_int) -> std::io::Result<()> {
    // SAFETY: dup returns a new descriptor we own (or -1); fd may be closed, then it fails.
    let original = unsafe { libc::dup(fd) };
    let mut out = if original < 0 {
        // Already closed: whatever is written goes nowhere.
        None
    } else {
        // SAFETY: `original` is a fresh descriptor owned by nobody else.
        Some(File::from(unsafe { OwnedFd::from_raw_fd(original) }))
    };
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created by pipe2 and are owned here.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: dup2 atomically points fd at the pipe; `writer` is closed after, fd keeps it open.
    if unsafe { libc::dup2(writer.as_raw_fd(), fd) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    drop(writer);
    let mut reader = File::from(reader);
    let original_fd = out.as_ref().map(|o| o.as_raw_fd());
    let pump = std::thread::Builder::new().name(format!("log-pump-{fd}")).spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        let mut broken = false;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            if !broken
                && let Some(o) = out.as_mut()
                && (o.write_all(&buf[..n]).is_err() || o.flush().is_err())
            {
                // The reader went away; keep draining so the node's writes never block or fail.
                // The original stays open: finish() points the fd back at it.
                broken = true;
            }
        }
    })?;
    PUMPS.lock().unwrap_or_else(|e| e.into_inner()).push(Pump { fd, original: original_fd, thread: pump });
    Ok(())
}
