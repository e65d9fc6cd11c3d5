//! Reading ahead: a thread reads (and, for a compressed capture, decompresses) the next chunks
//! of a capture while the analysis works on the current one, so the kernel's copy out of the
//! page cache (a quarter of all samples on a large capture, `_copy_to_iter`) runs on another
//! core.
//!
//! A fixed set of [`CHUNKS`] buffers of [`CHUNK_BYTES`] goes round between the two threads:
//! memory is bounded by construction, and nothing is allocated after the start. The reader
//! stops at the end of the input, at its first error (handed on, in order, as the next read's
//! result), or when the consuming side is gone — noticed between reads: a thread blocked reading
//! a pipe stays until that read returns. A thread that stops any other way (a panic in a
//! decoder) is an error for the consumer, never an early end of the input. The bytes counted as
//! read from the file (progress) run ahead of the analysis by up to the buffers' worth.

use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, SyncSender};

/// Bytes a chunk holds.
pub const CHUNK_BYTES: usize = 512 << 10;
/// Buffers in all: one being consumed, the rest read ahead.
pub const CHUNKS: usize = 4;

/// What the thread hands on.
enum Filled {
    Bytes(Vec<u8>),
    Error(io::Error),
    /// The input ended (anything else that ends the channel is the thread dying).
    End,
}

/// The consuming side: a [`Read`] over the chunks the thread filled.
pub struct ReadAhead {
    filled: Receiver<Filled>,
    emptied: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
    ended: bool,
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead")
            .field("at", &self.at)
            .field("len", &self.current.len())
            .field("ended", &self.ended)
            .finish()
    }
}

impl ReadAhead {
    /// Start reading `inner` ahead on a thread of its own; `Err` only when no thread could be
    /// started (the caller reads `inner` directly then, so it is handed back).
    pub fn spawn<R: Read + Send + 'static>(inner: R) -> Result<Self, R> {
        // room for every buffer and the end (or an error)
        let (fill_tx, filled) = mpsc::sync_channel(CHUNKS + 1);
        let (emptied, empty_rx) = mpsc::sync_channel(CHUNKS);
        // the reader moves in only once the thread runs, so a failed spawn can hand it back
        let (start_tx, start_rx) = mpsc::sync_channel::<R>(1);
        // every buffer allocated here, before the reading starts
        let spare: Vec<Vec<u8>> = (0..CHUNKS).map(|_| vec![0; CHUNK_BYTES]).collect();
        let spawned = std::thread::Builder::new()
            .name("meshwatch-read-ahead".into())
            .spawn(move || {
                if let Ok(inner) = start_rx.recv() {
                    fill(inner, spare, &fill_tx, &empty_rx);
                }
            });
        if spawned.is_err() {
            return Err(inner);
        }
        if let Err(mpsc::SendError(inner)) = start_tx.send(inner) {
            return Err(inner);
        }
        Ok(ReadAhead {
            filled,
            emptied,
            current: Vec::new(),
            at: 0,
            ended: false,
        })
    }
}

/// The thread's loop: fill a free buffer completely (or to the end of the input), hand it on.
fn fill<R: Read>(
    mut inner: R,
    mut spare: Vec<Vec<u8>>,
    filled: &SyncSender<Filled>,
    emptied: &Receiver<Vec<u8>>,
) {
    loop {
        let mut buf = match spare.pop() {
            Some(buf) => buf,
            None => match emptied.recv() {
                Ok(buf) => buf,
                Err(_) => return, // the consumer is gone
            },
        };
        // back to its full length (the capacity is kept, so this neither allocates nor copies)
        buf.resize(CHUNK_BYTES, 0);
        let mut len = 0;
        while len < CHUNK_BYTES {
            match inner.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // what was read before the error first, then the error
                    if len > 0 {
                        buf.truncate(len);
                        if filled.send(Filled::Bytes(buf)).is_err() {
                            return;
                        }
                    }
                    let _ = filled.send(Filled::Error(e));
                    return;
                }
            }
        }
        let at_end = len < CHUNK_BYTES;
        buf.truncate(len);
        if len > 0 && filled.send(Filled::Bytes(buf)).is_err() {
            return;
        }
        if at_end {
            let _ = filled.send(Filled::End);
            return;
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            if self.ended || out.is_empty() {
                return Ok(0);
            }
            let used = std::mem::take(&mut self.current);
            if used.capacity() > 0 {
                // never blocks: at most CHUNKS buffers exist; a finished thread just drops it
                let _ = self.emptied.try_send(used);
            }
            self.at = 0;
            match self.filled.recv() {
                Ok(Filled::Bytes(buf)) => self.current = buf,
                Ok(Filled::Error(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                Ok(Filled::End) => {
                    self.ended = true;
                    return Ok(0);
                }
                Err(_) => {
                    self.ended = true;
                    return Err(io::Error::other("the read-ahead thread stopped"));
                }
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A reader that hands out `data` in reads of the given sizes (cycled), then maybe fails.
    struct Uneven {
        data: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        turn: usize,
        fail_at_end: bool,
    }

    impl Read for Uneven {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.at == self.data.len() {
                return if self.fail_at_end {
                    Err(io::Error::other("disk gone"))
                } else {
                    Ok(0)
                };
            }
            let size = self.sizes[self.turn % self.sizes.len()].max(1);
            self.turn += 1;
            let n = size.min(out.len()).min(self.data.len() - self.at);
            out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn read_all(r: &mut impl Read, step: usize) -> (Vec<u8>, Option<io::Error>) {
        let mut got = Vec::new();
        let mut buf = vec![0; step.max(1)];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return (got, None),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return (got, Some(e)),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Every byte arrives once, in order, whatever the sizes of the reads on either side,
        /// over several rounds of the buffers; an error arrives after the bytes before it.
        #[test]
        fn the_bytes_arrive_in_order_then_the_end_or_the_error(
            len in 0usize..(CHUNK_BYTES * (CHUNKS + 3)),
            sizes in proptest::collection::vec(1usize..(CHUNK_BYTES + 4096), 1..5),
            step in 1usize..(2 * CHUNK_BYTES),
            fail_at_end: bool,
        ) {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            let inner = Uneven { data: data.clone(), at: 0, sizes, turn: 0, fail_at_end };
            let Ok(mut ahead) = ReadAhead::spawn(inner) else { panic!("no thread") };
            let (got, err) = read_all(&mut ahead, step);
            prop_assert!(got == data, "{} bytes of {} back", got.len(), data.len());
            prop_assert_eq!(err.is_some(), fail_at_end);
            // and the end stays the end
            prop_assert_eq!(ahead.read(&mut [0; 16]).ok(), Some(0));
        }
    }

    /// A reader that panics part way (a decoder's bug) ends in an error after the bytes
    /// before it, never in what looks like the end of the input.
    #[test]
    fn a_thread_that_dies_is_an_error_not_the_end() {
        struct Panics(usize);
        impl Read for Panics {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                assert!(self.0 < 3 * CHUNK_BYTES, "a decoder's bug");
                let n = out.len().min(4096);
                out[..n].fill(7);
                self.0 += n;
                Ok(n)
            }
        }
        let Ok(mut ahead) = ReadAhead::spawn(Panics(0)) else {
            panic!("no thread")
        };
        let (got, err) = read_all(&mut ahead, 10_000);
        assert_eq!(
            got.len(),
            3 * CHUNK_BYTES,
            "the full buffers before the panic"
        );
        let err = err.map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("the read-ahead thread stopped"));
    }

    #[test]
    fn dropping_the_reader_ends_the_thread() {
        // an endless input: the thread must stop once the consumer is gone
        struct Endless(std::sync::Arc<std::sync::atomic::AtomicUsize>);
        impl Read for Endless {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                out.fill(1);
                Ok(out.len())
            }
        }
        let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let Ok(mut ahead) = ReadAhead::spawn(Endless(reads.clone())) else {
            panic!("no thread")
        };
        let mut buf = vec![0; 1000];
        assert_eq!(ahead.read(&mut buf).ok(), Some(1000));
        drop(ahead);
        // the thread fills what it holds, then finds the consumer gone and stops reading
        std::thread::sleep(std::time::Duration::from_millis(200));
        let settled = reads.load(std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(reads.load(std::sync::atomic::Ordering::Relaxed), settled);
        assert!(
            settled <= CHUNKS + 1,
            "{settled} reads for {CHUNKS} buffers"
        );
    }
}
