//! The one copy loop every tunnel uses.

use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Chunks, since the process started, that found no splice pipe free (the shared budget in use,
/// or descriptors exhausted) and were relayed by copying through a buffer instead. For operators
/// and tests.
pub static SPLICE_FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// How many splice pipes the process may hold at once, shared by every tunnel (two descriptors
/// each). A pipe is lent to a direction only while a chunk passes through it, so idle tunnels
/// hold none and a tunnel costs two descriptors, not six; past the budget a chunk is copied
/// through a buffer instead. Set once at start from the descriptor limit
/// ([`crate::policy::splice_pipe_budget`]).
pub fn set_splice_pipe_budget(pipes: usize) {
    #[cfg(target_os = "linux")]
    splice::BUDGET.store(pipes, Ordering::Relaxed);
    #[cfg(not(target_os = "linux"))]
    let _ = pipes;
}

/// Notices a fatal error on a TCP socket — a reset from the peer, a keepalive timeout — even
/// while the relay neither reads nor writes that socket. Without it, a client that resets
/// while the target is not reading leaves the tunnel, its descriptors and its connection slot in
/// place until the idle timeout: the direction towards the target is parked on a full target,
/// and the other direction waits for target data.
///
/// The copy relay cannot borrow the socket it is also writing, so the watch holds a duplicate
/// descriptor registered for error events only.
#[derive(Debug)]
pub struct HangupWatch {
    fd: AsyncFd<OwnedFd>,
}

impl HangupWatch {
    /// Watches `socket` until the watch is dropped. Fails when no descriptor is left for the
    /// duplicate; relays then run unwatched, as before.
    pub fn new(socket: &TcpStream) -> std::io::Result<Self> {
        let dup = socket.as_fd().try_clone_to_owned()?;
        // SAFETY: an OwnedFd is a valid open descriptor that only its owner closes, and the
        // AsyncFd owns it for its whole life; as_raw_fd always returns that same descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(dup, Interest::ERROR) }.map_err(std::io::Error::from)?;
        Ok(Self { fd })
    }

    /// Completes with the socket's pending error once it has one.
    async fn fired(&self) -> std::io::Error {
        match self.fd.ready(Interest::ERROR).await {
            Ok(_) => socket_error(socket2::SockRef::from(self.fd.get_ref())),
            Err(e) => e,
        }
    }
}

/// The error a socket reports through SO_ERROR, or a reset when it was already consumed.
fn socket_error(sock: socket2::SockRef<'_>) -> std::io::Error {
    match sock.take_error() {
        Ok(Some(e)) => e,
        Ok(None) => std::io::ErrorKind::ConnectionReset.into(),
        Err(e) => e,
    }
}

/// Completes when any of `watches` fires; never when there are none.
async fn any_hangup(watches: &[HangupWatch]) -> std::io::Error {
    match watches {
        [] => std::future::pending().await,
        [one] => one.fired().await,
        [first, rest @ ..] => {
            tokio::select! {
                e = first.fired() => e,
                e = Box::pin(any_hangup(rest)) => e,
            }
        }
    }
}

/// Completes with `socket`'s error once it has one, for relays that hold the socket by
/// shared reference.
async fn hangup(socket: &TcpStream) -> std::io::Error {
    match socket.ready(Interest::ERROR).await {
        Ok(_) => socket_error(socket2::SockRef::from(socket)),
        Err(e) => e,
    }
}

/// Per-direction buffer. 64 KiB lets one read drain a loopback burst, which matters more for
/// throughput than any other knob here; the memory is bounded per tunnel.
pub const BUFFER: usize = 64 * 1024;

/// Bytes moved by [`relay`], per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transferred {
    /// From `a` to `b`.
    pub a_to_b: u64,
    /// From `b` to `a`.
    pub b_to_a: u64,
}

/// Copies both ways until both directions have ended. An EOF in one direction is passed on as a
/// half-close (`shutdown(SHUT_WR)`) while the other direction keeps flowing; an error
/// on either side ends both.
///
/// `idle` ends the tunnel after that long without a byte read in either direction.
/// The handshake deadline never applies here (V-20).
pub async fn relay<A, B>(a: &mut A, b: &mut B, idle: Option<Duration>) -> std::io::Result<Transferred>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    relay_watched(a, b, idle, &[]).await
}

/// [`relay`], also ending both directions as soon as one of `watches` reports an error on its
/// socket, which the copy loop would not see while it waits on the other side.
pub async fn relay_watched<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Option<Duration>,
    watches: &[HangupWatch],
) -> std::io::Result<Transferred>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let progress = Arc::new(AtomicU64::new(0));
    let mut ta = Tracked { inner: a, progress: progress.clone() };
    let mut tb = Tracked { inner: b, progress: progress.clone() };
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut ta, &mut tb, BUFFER, BUFFER);
    let idle = async {
        match idle {
            Some(limit) => watchdog(&progress, limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = copy => { let (a_to_b, b_to_a) = r?; Ok(Transferred { a_to_b, b_to_a }) }
        () = idle => Err(idle_error()),
        e = any_hangup(watches) => Err(e),
    }
}

/// Relays between two TCP sockets; on Linux without any userspace buffer.
///
/// Bytes move socket → pipe → socket with `splice(2)`, so the kernel hands pages over instead
/// of copying them through our memory twice, and an idle tunnel holds no buffer and no pipe: a
/// direction borrows a pipe from a process-wide pool for each chunk and gives it back once the
/// chunk has been written. This is what lets one tunnel run close to direct loopback speed and
/// ten thousand idle tunnels cost two descriptors and a few KiB each. Semantics are those of
/// [`relay`]: half-close passes through, an error ends both directions, and `idle` bounds
/// silence in both directions together. A reset on either socket ends the tunnel at once even
/// while neither direction is reading it. When no pipe is free (the budget of
/// [`set_splice_pipe_budget`] in use, or descriptors exhausted), the chunk is copied through a
/// buffer instead of failing the tunnel.
pub async fn relay_tcp(a: &mut TcpStream, b: &mut TcpStream, idle: Option<Duration>) -> std::io::Result<Transferred> {
    #[cfg(target_os = "linux")]
    {
        splice::relay(a, b, idle).await
    }
    #[cfg(not(target_os = "linux"))]
    {
        let watches: Vec<HangupWatch> = [&*a, &*b].into_iter().filter_map(|s| HangupWatch::new(s).ok()).collect();
        relay_watched(a, b, idle, &watches).await
    }
}

/// Waits until `progress` has not moved for `limit`, checking at a fraction of the limit so the
/// overshoot stays small without a timer per read.
async fn watchdog(progress: &AtomicU64, limit: Duration) {
    let tick = (limit / 4).max(Duration::from_millis(10));
    let mut seen = progress.load(Ordering::Relaxed);
    let mut quiet = Duration::ZERO;
    loop {
        tokio::time::sleep(tick).await;
        let now = progress.load(Ordering::Relaxed);
        if now == seen {
            quiet += tick;
            if quiet >= limit {
                return;
            }
        } else {
            seen = now;
            quiet = Duration::ZERO;
        }
    }
}

fn idle_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "tunnel idle timeout")
}

#[cfg(target_os = "linux")]
mod splice {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::io::Interest;
    use tokio::net::TcpStream;

    use super::{hangup, idle_error, watchdog, Transferred, BUFFER, SPLICE_FALLBACKS};

    /// Pipe capacity requested per direction; larger pipes mean fewer syscalls per megabyte.
    /// The kernel allocates the pages only as data passes, and caps the size at
    /// /proc/sys/fs/pipe-max-size (the default capacity is kept if the request is refused).
    const PIPE_SIZE: libc::c_int = 1 << 20;

    pub(super) async fn relay(a: &TcpStream, b: &TcpStream, idle: Option<Duration>) -> io::Result<Transferred> {
        let _running = Running::start();
        let progress = AtomicU64::new(0);
        let both = async {
            let (a_to_b, b_to_a) = tokio::try_join!(one_way(a, b, &progress), one_way(b, a, &progress))?;
            Ok(Transferred { a_to_b, b_to_a })
        };
        let idle = async {
            match idle {
                Some(limit) => watchdog(&progress, limit).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = both => r,
            () = idle => Err(idle_error()),
            // a direction parked on a full peer does not read its source, so a reset
            // there would go unnoticed until the idle timeout.
            e = hangup(a) => Err(e),
            e = hangup(b) => Err(e),
        }
    }

    /// Pipes the process may hold at once; see [`super::set_splice_pipe_budget`].
    pub(super) static BUDGET: AtomicUsize = AtomicUsize::new(crate::policy::SPLICE_PIPES as usize);
    /// Pipes that exist now, lent or idle.
    static LIVE: AtomicUsize = AtomicUsize::new(0);
    /// Empty pipes waiting to be lent again.
    static IDLE: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());
    /// Spliced tunnels running now.
    static ACTIVE: AtomicUsize = AtomicUsize::new(0);
    /// Idle pipes kept for reuse, at most one per running tunnel: more are closed, so a burst
    /// does not pin descriptors, and with no tunnel left the process is back to its baseline.
    const KEEP_IDLE: usize = 64;

    /// How many idle pipes may stay while `active` tunnels run.
    fn keep(active: usize) -> usize {
        KEEP_IDLE.min(active)
    }

    /// Counts a running tunnel; when it ends, idle pipes beyond what the rest can use are closed.
    struct Running;

    impl Running {
        fn start() -> Running {
            ACTIVE.fetch_add(1, Ordering::Relaxed);
            Running
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            let left = ACTIVE.fetch_sub(1, Ordering::Relaxed) - 1;
            let surplus: Vec<Pipe> = {
                let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
                let k = keep(left);
                if idle.len() > k {
                    idle.split_off(k)
                } else {
                    Vec::new()
                }
            };
            drop(surplus);
        }
    }

    /// A pipe's two ends. Dropping one (a chunk cut short by an error or a cancelled tunnel)
    /// closes it and frees its place in the budget.
    struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl Pipe {
        /// An empty pipe from the pool, a new one while the budget allows, or `None`.
        fn take() -> Option<Pipe> {
            if let Some(p) = IDLE.lock().unwrap_or_else(|e| e.into_inner()).pop() {
                return Some(p);
            }
            let budget = BUDGET.load(Ordering::Relaxed);
            if LIVE.fetch_add(1, Ordering::Relaxed) >= budget {
                LIVE.fetch_sub(1, Ordering::Relaxed);
                return None;
            }
            match Self::create() {
                Ok(p) => Some(p),
                Err(e) => {
                    // EMFILE/ENFILE: a tunnel that is already up must not die for want of a
                    // pipe; the caller copies instead.
                    LIVE.fetch_sub(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "no pipe for splice; copying instead");
                    None
                }
            }
        }

        /// Gives an emptied pipe back to the pool.
        fn give(self) {
            let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < keep(ACTIVE.load(Ordering::Relaxed)) {
                idle.push(self);
            }
        }

        fn create() -> io::Result<Self> {
            let mut fds = [0 as RawFd; 2];
            // SAFETY: `fds` is a valid out-array of two ints, as pipe2 requires.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
            let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            // Best effort: a refused resize leaves the default 64 KiB pipe, which still works.
            // SAFETY: plain fcntl on a descriptor we own.
            unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
            Ok(Self { read, write })
        }
    }

    impl Drop for Pipe {
        fn drop(&mut self) {
            LIVE.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
        // SAFETY: both descriptors are open for the duration of the call; null offsets are
        // required for sockets and pipes.
        let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// What one chunk did.
    enum Chunk {
        /// This many octets moved.
        Moved(usize),
        /// The source reached EOF.
        Eof,
        /// The readiness was spurious; wait again.
        Again,
    }

    /// Moves `src` → `dst` until EOF, then half-closes `dst`.
    async fn one_way(src: &TcpStream, dst: &TcpStream, progress: &AtomicU64) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            src.readable().await?;
            let chunk = match Pipe::take() {
                Some(pipe) => spliced_chunk(src, dst, pipe).await?,
                None => {
                    let c = copied_chunk(src, dst).await?;
                    if matches!(c, Chunk::Moved(_)) {
                        SPLICE_FALLBACKS.fetch_add(1, Ordering::Relaxed);
                    }
                    c
                }
            };
            match chunk {
                Chunk::Moved(n) => {
                    progress.fetch_add(1, Ordering::Relaxed);
                    total += n as u64;
                }
                Chunk::Eof => {
                    // Pass the half-close on and let the other direction finish.
                    let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
                    return Ok(total);
                }
                Chunk::Again => {}
            }
        }
    }

    /// One chunk socket → pipe → socket. The pipe goes back to the pool only empty; on an error
    /// (or when the tunnel is dropped mid-chunk) it is closed with whatever it held.
    async fn spliced_chunk(src: &TcpStream, dst: &TcpStream, pipe: Pipe) -> io::Result<Chunk> {
        let n = match src
            .try_io(Interest::READABLE, || splice(src.as_raw_fd(), pipe.write.as_raw_fd(), PIPE_SIZE as usize))
        {
            Ok(0) => {
                pipe.give();
                return Ok(Chunk::Eof);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pipe.give();
                return Ok(Chunk::Again);
            }
            Err(e) => {
                pipe.give();
                return Err(e);
            }
        };
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || splice(pipe.read.as_raw_fd(), dst.as_raw_fd(), left)) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        pipe.give();
        Ok(Chunk::Moved(n))
    }

    /// One chunk through a buffer that lives only as long as the chunk, when no pipe is free.
    async fn copied_chunk(src: &TcpStream, dst: &TcpStream) -> io::Result<Chunk> {
        let mut buf = vec![0u8; BUFFER];
        let n = match src.try_read(&mut buf) {
            Ok(0) => return Ok(Chunk::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Chunk::Again),
            Err(e) => return Err(e),
        };
        let mut done = 0;
        while done < n {
            dst.writable().await?;
            match dst.try_write(&buf[done..n]) {
                Ok(m) => done += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Chunk::Moved(n))
    }
}

/// A stream that counts successful non-empty reads, so a watchdog can tell idle from busy.
struct Tracked<'a, S: ?Sized> {
    inner: &'a mut S,
    progress: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Tracked<'_, S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.progress.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Tracked<'_, S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
