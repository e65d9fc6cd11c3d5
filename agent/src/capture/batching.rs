//! How long the live capture thread rests once it has drained the kernel's ring, so that it
//! takes packets in large batches.
//!
//! A wakeup costs more than its system call: the thread comes back to cold caches (its flow
//! table, the identity map, the edge store, its own code). Measured with the `agent_path`
//! benchmark, a 40 ms pause every 4,000 packets made each packet of a churn of short
//! connections cost 1.7x what it costs back to back, every 500 packets 3x (mixed traffic:
//! 1.3x and, every 250 packets, 2.9x). The kernel hands over a block at a time (a few hundred full-size packets), so
//! waking for every block paid that again and again. Resting lets several blocks gather.
//!
//! The rest is bounded by the ring twice: at the rate of the last cycle it may let a quarter of
//! the ring fill, and whatever that rate, a burst at [`BURST_BYTES_PER_SEC`] (10 Gbit/s) that
//! starts as the rest does fills at most three quarters of it (40 ms for the default 64 MiB
//! ring, 5 ms for 8 MiB); never more than [`MAX_REST`]. When nothing came since the last drain
//! there is no rest: there is nothing to gather, and the wait for the capture's next block
//! rests instead (an idle agent wakes once a publish, not once a rest).
//!
//! PURE: time is a parameter.

use std::time::Duration;

/// The longest rest: what a burst after a quiet moment may fill, and the added delay of a
/// flow event (the agent publishes once a second).
pub const MAX_REST: Duration = Duration::from_millis(50);

/// The part of the ring a rest may let fill at the current rate.
const RING_SHARE: u64 = 4;
/// The burst a rest must survive whatever the last rate was: 10 Gbit/s ...
pub const BURST_BYTES_PER_SEC: u64 = 1_250_000_000;
/// ... filling at most three quarters of the ring.
const BURST_SHARE: (u64, u64) = (3, 4);
/// What a packet takes in the ring beside its bytes: the TPACKET_V3 header and the link-level
/// address, with the padding and alignment (80–97 bytes; the larger is taken).
const RING_OVERHEAD: u64 = 97;

/// The bytes taken since the ring was last drained, and when that was.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    ring_bytes: u64,
    /// The longest rest this ring survives a burst through.
    longest: Duration,
    taken: u64,
    since: Duration,
}

impl Batching {
    /// For a ring of `ring_bytes`, starting at `now` (any monotonic clock).
    pub fn new(ring_bytes: u64, now: Duration) -> Self {
        let burst = u128::from(ring_bytes) * u128::from(BURST_SHARE.0) * 1_000_000_000
            / (u128::from(BURST_SHARE.1) * u128::from(BURST_BYTES_PER_SEC));
        Batching {
            ring_bytes,
            longest: Duration::from_nanos(u64::try_from(burst).unwrap_or(u64::MAX)).min(MAX_REST),
            taken: 0,
            since: now,
        }
    }

    /// A packet of `caplen` bytes was taken from the ring.
    pub fn took(&mut self, caplen: u32) {
        self.taken = self.taken.saturating_add(u64::from(caplen) + RING_OVERHEAD);
    }

    /// The longest rest this ring survives a burst through.
    pub fn longest(&self) -> Duration {
        self.longest
    }

    /// The ring is drained at `now`: how long to rest before looking again. The rate is what
    /// came since the last drain (its rest, the wait and the work), over that time. Nothing
    /// since then is no rest at all (see the module's words).
    pub fn rest(&mut self, now: Duration) -> Duration {
        let cycle = now.saturating_sub(self.since);
        let rest = match self.taken {
            // nothing came: nothing to gather, the wait for the capture rests instead
            0 => Duration::ZERO,
            taken => {
                // at `taken / cycle` bytes a second, a quarter of the ring fills in this long
                let share = self.ring_bytes / RING_SHARE;
                let nanos = u128::from(share) * cycle.as_nanos() / u128::from(taken);
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).min(self.longest)
            }
        };
        self.taken = 0;
        self.since = now;
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_idle_capture_does_not_rest_and_a_slow_one_rests_as_long_as_a_burst_allows() {
        let mut b = Batching::new(64 * MIB, Duration::ZERO);
        // three quarters of 64 MiB at 10 Gbit/s
        let longest = Duration::from_nanos(40_265_318);
        assert_eq!(b.longest(), longest);
        // nothing came: no rest (the capture's wait does it)
        assert_eq!(b.rest(100 * MS), Duration::ZERO);
        b.took(903);
        // 1,000 bytes in 150 ms: a quarter of the ring would take hours
        assert_eq!(b.rest(250 * MS), longest);
        // a smaller ring, a shorter rest; a huge one, at most MAX_REST
        assert_eq!(
            Batching::new(8 * MIB, Duration::ZERO).longest(),
            Duration::from_nanos(5_033_164)
        );
        assert_eq!(Batching::new(1 << 40, Duration::ZERO).longest(), MAX_REST);
    }

    #[test]
    fn a_fast_capture_rests_while_a_quarter_of_the_ring_fills() {
        let mut b = Batching::new(64 * MIB, Duration::ZERO);
        // 64 MiB in 100 ms (5 Gbit/s): 16 MiB come in 25 ms
        for _ in 0..1024 {
            b.took(64 * 1024 - 97);
        }
        assert_eq!(b.rest(100 * MS), 25 * MS);
        // the next cycle is measured from that drain, its rest included: 128 MiB in 50 ms
        for _ in 0..2048 {
            b.took(64 * 1024 - 97);
        }
        assert_eq!(b.rest(150 * MS), Duration::from_micros(6250));
        // bytes in no time at all: no rest
        b.took(1);
        assert_eq!(b.rest(150 * MS), Duration::ZERO);
    }

    #[test]
    fn a_clock_that_goes_back_is_a_cycle_of_no_time() {
        let mut b = Batching::new(64 * MIB, 10 * MS);
        b.took(1500);
        assert_eq!(b.rest(Duration::ZERO), Duration::ZERO);
    }
}
