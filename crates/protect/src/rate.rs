//! A sliding-window counter in two buckets: the count of the current window plus the previous
//! window's count weighted by how much of it still overlaps (the approximation rate limiters
//! such as nginx's and Cloudflare's use): constant memory, no timestamps kept.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct SlidingCounter {
    start: Instant,
    previous: u32,
    current: u32,
}

impl SlidingCounter {
    pub fn new(now: Instant) -> SlidingCounter {
        SlidingCounter {
            start: now,
            previous: 0,
            current: 0,
        }
    }

    fn roll(&mut self, now: Instant, window: Duration) {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed < window {
            return;
        }
        if elapsed < window * 2 {
            self.previous = self.current;
            self.start += window;
        } else {
            self.previous = 0;
            self.start = now;
        }
        self.current = 0;
    }

    /// Count one event; returns the estimated events in the last `window`, this one included.
    pub fn hit(&mut self, now: Instant, window: Duration) -> u64 {
        self.roll(now, window);
        self.current = self.current.saturating_add(1);
        self.estimate(now, window)
    }

    /// Estimated events in the last `window`.
    pub fn estimate(&mut self, now: Instant, window: Duration) -> u64 {
        self.roll(now, window);
        let into = now.saturating_duration_since(self.start).as_secs_f64();
        let w = window.as_secs_f64().max(f64::MIN_POSITIVE);
        let overlap = (1.0 - into / w).clamp(0.0, 1.0);
        (f64::from(self.previous) * overlap).floor() as u64 + u64::from(self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_within_the_window_and_forgets_after_two() {
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        let mut c = SlidingCounter::new(t0);
        for _ in 0..10 {
            c.hit(t0, w);
        }
        assert_eq!(c.estimate(t0 + Duration::from_secs(59), w), 10);
        // Half of the previous window still overlaps.
        assert_eq!(c.estimate(t0 + Duration::from_secs(90), w), 5);
        assert_eq!(c.estimate(t0 + Duration::from_secs(121), w), 0);
        assert_eq!(c.hit(t0 + Duration::from_secs(300), w), 1);
    }
}
