//! Writes held back to the end of the scheduler's current batch, so a busy
//! server wakes its peers once per batch instead of once per message.
//!
//! # Why
//!
//! Writing to a loopback (or any local) socket whose reader is asleep wakes
//! that reader from inside the writer's system call: the kernel takes the
//! socket's wait-queue lock, picks a CPU, enqueues the task and, on a virtual
//! machine, often sends an inter-processor interrupt. Measured on the gateway
//! under `bench/compare.sh` load, that wake-up was the single largest kernel
//! cost of a proxied request (`sock_def_readable` →
//! `_raw_spin_unlock_irqrestore`, ~14 % of the gateway's CPU), and the gateway
//! woke its peers (the client, the upstream) 0.76 times per request where
//! nginx, proxying the same load, woke them 0.15 times.
//!
//! The difference is timing, not the number of writes: a task that finishes
//! a request writes it at once, and the next task's write comes ~20 µs later,
//! by which time the peer has handled the first message and gone back to
//! sleep. Here a connection's first write after it has read something (a new
//! message) yields once to the scheduler instead: the task wakes itself and
//! goes to the back of the run queue, so the writes of every connection that
//! became ready in the same batch are made back to back, after the batch's
//! parsing, checking and signing is done. The first write of the burst wakes
//! the peer; the rest find it awake. Measured the same way (interleaved A/B
//! of one binary, wrk -c32, 2026-11-29): wake-ups per request 0.76 → 0.22,
//! the gateway's CPU per proxied request ~11 % lower with one worker and
//! with two, and its kernel time per request now about nginx's.
//!
//! # What it costs and keeps
//!
//! One extra poll of the connection's task per message written. Latency grows
//! by at most the rest of the current batch (the tasks already queued); with
//! nothing else queued, the task runs again at once. Nothing is buffered here:
//! the bytes stay in the server's own write buffer until the real write, so
//! ordering, back-pressure (a full socket returns `Pending` as before) and
//! errors are exactly the inner stream's.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream whose first write after each read yields to the scheduler once
/// (see the module docs). Reads, flushes and shutdowns pass straight through.
#[derive(Debug)]
pub struct BatchedWrites<S> {
    inner: S,
    /// Whether this message's first write has already yielded.
    yielded: bool,
}

impl<S> BatchedWrites<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner, yielded: false }
    }

    /// Yields once per message: wakes the task (to the back of the run
    /// queue, as tokio schedules a task that woke itself while polled) and
    /// reports `Pending`.
    fn yield_before_first_write(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for BatchedWrites<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            // Something arrived: what is written next answers it.
            self.yielded = false;
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        std::task::ready!(self.yield_before_first_write(cx));
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.yield_before_first_write(cx));
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, duplex};

    use super::*;

    struct CountWakes(AtomicUsize);
    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls one write of `bytes`, returning what it reported.
    fn poll_write_once<S: AsyncWrite + Unpin>(
        stream: &mut BatchedWrites<S>,
        bytes: &[u8],
        wakes: &Arc<CountWakes>,
    ) -> Poll<io::Result<usize>> {
        let waker = std::task::Waker::from(Arc::clone(wakes));
        Pin::new(stream).poll_write(&mut Context::from_waker(&waker), bytes)
    }

    #[tokio::test]
    async fn the_first_write_of_each_message_yields_once_and_wakes_its_task() {
        let (near, mut far) = duplex(1024);
        let mut stream = BatchedWrites::new(near);
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));

        // The first write of a message: pending, with the task woken to come back.
        assert!(poll_write_once(&mut stream, b"one", &wakes).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        // Polled again, it writes; so do the message's later writes, at once.
        assert!(matches!(poll_write_once(&mut stream, b"one", &wakes), Poll::Ready(Ok(3))));
        assert!(matches!(poll_write_once(&mut stream, b"two", &wakes), Poll::Ready(Ok(3))));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);

        // Something read starts a new message: its first write yields again.
        far.write_all(b"next").await.unwrap();
        let mut got = [0u8; 4];
        stream.read_exact(&mut got).await.unwrap();
        assert!(poll_write_once(&mut stream, b"three", &wakes).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        assert!(matches!(poll_write_once(&mut stream, b"three", &wakes), Poll::Ready(Ok(5))));

        let mut written = [0u8; 11];
        far.read_exact(&mut written).await.unwrap();
        assert_eq!(&written, b"onetwothree");
    }

    #[tokio::test]
    async fn a_read_of_nothing_does_not_start_a_new_message() {
        let (near, far) = duplex(64);
        let mut stream = BatchedWrites::new(near);
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        assert!(poll_write_once(&mut stream, b"x", &wakes).is_pending());
        assert!(poll_write_once(&mut stream, b"x", &wakes).is_ready());
        // The peer closing its side reads as 0 bytes: no new message.
        drop(far);
        let mut buf = [0u8; 8];
        let n = poll_fn(|cx| {
            let mut read = ReadBuf::new(&mut buf);
            Pin::new(&mut stream).poll_read(cx, &mut read).map_ok(|()| read.filled().len())
        })
        .await
        .unwrap();
        assert_eq!(n, 0);
        assert!(!matches!(poll_write_once(&mut stream, b"x", &wakes), Poll::Pending));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn writes_through_the_wrapper_arrive_whole_and_in_order() {
        let (near, mut far) = duplex(64 * 1024);
        let mut stream = BatchedWrites::new(near);
        let message: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        stream.write_all(&message).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, message);
    }
}
