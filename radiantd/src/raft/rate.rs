//! A token bucket that bounds the bytes per second this node sends in bulk transfers
//! (snapshots today, shard-move exports later), so that catching up a new replica cannot
//! starve the node's own Raft traffic and client requests of disk and network bandwidth.
//!
//! One limiter is shared by every group on the node, and its rate is a cluster setting
//! (`snapshot_rate_mib`) that each node learns from its heartbeat replies, so it changes at
//! run time without restarting a transfer.
//!
//! A sender reserves its bytes before sending them and sleeps off any debt: a chunk larger
//! than the burst still goes through, and several senders queue behind each other in the
//! order they reserved. A change of rate wakes every sleeper, which then sends its chunk at
//! once: at most one chunk per transfer slips through at the old rate, and a transfer is
//! never left sleeping for minutes on a rate the operator has just raised.

use std::sync::Mutex;

use tokio::sync::watch;
use tokio::time::Duration;
use tokio::time::Instant;

/// How much unused rate accumulates while no one sends: a tenth of a second's worth, so an
/// idle period is not followed by a long burst at full speed.
const BURST: Duration = Duration::from_millis(100);

const MIB: f64 = 1024.0 * 1024.0;

struct Bucket {
    /// Bytes per second; 0 means unlimited.
    rate: f64,
    /// Bytes that may be sent now; negative while senders sleep off their reservations.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

/// A per-node bandwidth limit for bulk transfers. See the module documentation.
pub struct RateLimiter {
    bucket: Mutex<Bucket>,
    /// Bumped on every change of rate, to wake the senders that sleep on the old one.
    changed: watch::Sender<u64>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(0)
    }
}

impl RateLimiter {
    /// A limiter of `mib_per_sec` MiB/s; 0 means unlimited.
    pub fn new(mib_per_sec: u32) -> Self {
        let bucket = Bucket { rate: f64::from(mib_per_sec) * MIB, tokens: 0.0, at: Instant::now() };
        Self { bucket: Mutex::new(bucket), changed: watch::Sender::new(0) }
    }

    /// The rate in MiB/s; 0 means unlimited.
    pub fn rate_mib(&self) -> u32 {
        (self.lock().rate / MIB) as u32
    }

    /// Changes the rate. Called on every heartbeat reply, so setting the same rate again is a
    /// no-op that keeps the bucket's state.
    pub fn set_rate_mib(&self, mib_per_sec: u32) {
        let rate = f64::from(mib_per_sec) * MIB;
        {
            let mut b = self.lock();
            if b.rate == rate {
                return;
            }
            tracing::info!(from = (b.rate / MIB) as u32, to = mib_per_sec, "bulk transfer rate limit changed (MiB/s)");
            *b = Bucket { rate, tokens: 0.0, at: Instant::now() };
        }
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Waits until `bytes` may be sent.
    pub async fn acquire(&self, bytes: usize) {
        let mut changed = self.changed.subscribe();
        let wait = {
            let mut b = self.lock();
            if b.rate <= 0.0 {
                return;
            }
            let now = Instant::now();
            let burst = b.rate * BURST.as_secs_f64();
            b.tokens = (b.tokens + b.rate * now.duration_since(b.at).as_secs_f64()).min(burst);
            b.at = now;
            b.tokens -= bytes as f64;
            if b.tokens >= 0.0 {
                return;
            }
            Duration::from_secs_f64(-b.tokens / b.rate)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = changed.changed() => {}
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const CHUNK: usize = 1024 * 1024;

    /// Sends `chunks` chunks through `limiter` and returns how long it took.
    async fn send(limiter: &RateLimiter, chunks: usize) -> Duration {
        let start = Instant::now();
        for _ in 0..chunks {
            limiter.acquire(CHUNK).await;
        }
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let limiter = RateLimiter::new(0);
        assert_eq!(send(&limiter, 1000).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_transfer_takes_its_size_over_the_rate() {
        let limiter = RateLimiter::new(4);
        // 40 MiB at 4 MiB/s: 10 s. The bucket starts empty, so even the first chunk waits.
        let took = send(&limiter, 40).await;
        assert!(took >= Duration::from_secs(10) - Duration::from_millis(1), "{took:?}");
        assert!(took <= Duration::from_millis(10_100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn senders_share_one_rate() {
        let limiter = Arc::new(RateLimiter::new(2));
        let start = Instant::now();
        let a = tokio::spawn({
            let l = limiter.clone();
            async move { send(&l, 10).await }
        });
        let b = tokio::spawn({
            let l = limiter.clone();
            async move { send(&l, 10).await }
        });
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        // 20 MiB at 2 MiB/s in all: the last of the two finishes after about 10 s.
        let total = start.elapsed();
        assert!(total >= Duration::from_millis(9_990) && total <= Duration::from_millis(10_600), "{total:?}");
        assert!(a.max(b) >= Duration::from_millis(9_400), "{a:?} {b:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_of_rate_applies_at_once() {
        let limiter = Arc::new(RateLimiter::new(1));
        let sender = tokio::spawn({
            let l = limiter.clone();
            async move { send(&l, 100).await }
        });
        // At 1 MiB/s, 100 MiB would take 100 s; after 3 s the operator lifts the limit.
        tokio::time::sleep(Duration::from_secs(3)).await;
        limiter.set_rate_mib(0);
        assert_eq!(limiter.rate_mib(), 0);
        let took = sender.await.unwrap();
        assert!(took <= Duration::from_millis(4_100), "{took:?}");

        // And back: a limit set while idle holds the next transfer to it.
        limiter.set_rate_mib(8);
        let took = send(&limiter, 16).await;
        assert!(took >= Duration::from_millis(1_990) && took <= Duration::from_millis(2_100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_buys_only_a_short_burst() {
        let limiter = RateLimiter::new(10);
        tokio::time::sleep(Duration::from_secs(60)).await;
        // A minute of idleness is worth 100 ms at 10 MiB/s, i.e. 1 MiB: the second chunk
        // already waits.
        let took = send(&limiter, 11).await;
        assert!(took >= Duration::from_millis(990), "{took:?}");
    }
}
