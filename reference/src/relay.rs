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
    let watchdog = async {
        // Checking at a fraction of the limit keeps the overshoot small without a timer per read.
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
    };
    tokio::select! {
        r = copy => { let (a_to_b, b_to_a) = r?; Ok(Transferred { a_to_b, b_to_a }) }
        () = watchdog => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "tunnel idle timeout")),
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
