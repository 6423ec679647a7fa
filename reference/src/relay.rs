//! The one copy loop every tunnel uses.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
    let Some(limit) = idle else {
        let (a_to_b, b_to_a) = tokio::io::copy_bidirectional_with_sizes(a, b, BUFFER, BUFFER).await?;
        return Ok(Transferred { a_to_b, b_to_a });
    };
    let progress = Arc::new(AtomicU64::new(0));
    let mut ta = Tracked { inner: a, progress: progress.clone() };
    let mut tb = Tracked { inner: b, progress: progress.clone() };
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut ta, &mut tb, BUFFER, BUFFER);
    tokio::select! {
        r = copy => { let (a_to_b, b_to_a) = r?; Ok(Transferred { a_to_b, b_to_a }) }
        () = watchdog(&progress, limit) => Err(idle_error()),
    }
}

/// Relays between two TCP sockets; on Linux without any userspace buffer.
///
/// Bytes move socket → pipe → socket with `splice(2)`, so the kernel hands pages over instead
/// of copying them through our memory twice, and an idle tunnel holds no buffer at all: a
/// direction's pipe is created when it first carries data. This is what lets one tunnel run
/// close to direct loopback speed and thousands of idle tunnels cost a few KiB each. Semantics
/// are those of [`relay`]: half-close passes through, an error ends both directions, and `idle`
/// bounds silence in both directions together.
pub async fn relay_tcp(
    a: &mut tokio::net::TcpStream,
    b: &mut tokio::net::TcpStream,
    idle: Option<Duration>,
) -> std::io::Result<Transferred> {
    #[cfg(target_os = "linux")]
    {
        splice::relay(a, b, idle).await
    }
    #[cfg(not(target_os = "linux"))]
    {
        relay(a, b, idle).await
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
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use tokio::io::Interest;
    use tokio::net::TcpStream;

    use super::{idle_error, watchdog, Transferred};

    /// Pipe capacity requested per direction; larger pipes mean fewer syscalls per megabyte.
    /// The kernel allocates the pages only as data passes, and caps the size at
    /// /proc/sys/fs/pipe-max-size (the default capacity is kept if the request is refused).
    const PIPE_SIZE: libc::c_int = 1 << 20;

    pub(super) async fn relay(a: &TcpStream, b: &TcpStream, idle: Option<Duration>) -> io::Result<Transferred> {
        let progress = AtomicU64::new(0);
        let both = async {
            let (a_to_b, b_to_a) = tokio::try_join!(one_way(a, b, &progress), one_way(b, a, &progress))?;
            Ok(Transferred { a_to_b, b_to_a })
        };
        match idle {
            None => both.await,
            Some(limit) => tokio::select! {
                r = both => r,
                () = watchdog(&progress, limit) => Err(idle_error()),
            },
        }
    }

    /// A pipe's two ends.
    struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl Pipe {
        fn new() -> io::Result<Self> {
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

    /// Whether data (> 0) or EOF (0) is waiting, without consuming it.
    fn peek(fd: RawFd) -> io::Result<usize> {
        let mut byte = 0u8;
        // SAFETY: a one-byte buffer we own; MSG_PEEK leaves the data in the socket.
        let n = unsafe { libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Moves `src` → `dst` until EOF, then half-closes `dst`.
    async fn one_way(src: &TcpStream, dst: &TcpStream, progress: &AtomicU64) -> io::Result<u64> {
        let mut pipe: Option<Pipe> = None;
        let mut total = 0u64;
        loop {
            src.readable().await?;
            let p = match &pipe {
                Some(p) => p,
                None => {
                    // Most short-lived tunnels end without data in one direction: look before
                    // paying for a pipe, so an EOF costs no descriptors.
                    match src.try_io(Interest::READABLE, || peek(src.as_raw_fd())) {
                        Ok(0) => {
                            let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
                            return Ok(total);
                        }
                        Ok(_) => pipe.insert(Pipe::new()?),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    }
                }
            };
            let n = match src
                .try_io(Interest::READABLE, || splice(src.as_raw_fd(), p.write.as_raw_fd(), PIPE_SIZE as usize))
            {
                Ok(0) => {
                    // EOF: pass the half-close on and let the other direction finish.
                    let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
                    return Ok(total);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            progress.fetch_add(1, Ordering::Relaxed);
            let mut left = n;
            while left > 0 {
                dst.writable().await?;
                match dst.try_io(Interest::WRITABLE, || splice(p.read.as_raw_fd(), dst.as_raw_fd(), left)) {
                    Ok(m) => left -= m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            total += n as u64;
        }
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
