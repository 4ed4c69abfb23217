//! Per-principal rate limiting with GCRA (the generic cell rate algorithm): one timestamp per
//! principal, the "theoretical arrival time" of its next request. A request is allowed when
//! that time is at most `burst - 1` emission intervals ahead of now.
//!
//! Memory is bounded: a principal whose theoretical arrival time has passed is exactly as well
//! off as one never seen (a full bucket), so such entries are dropped without changing any
//! outcome; only when `max_tracked` principals are all active at once is the one closest to a
//! full bucket forgotten early.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::config::Quota;

pub struct RateLimiter {
    // A std mutex: nothing awaits while holding it, and each check is a few hash operations.
    state: Mutex<State>,
    max_tracked: usize,
}

struct State {
    next_free: HashMap<String, Instant>,
    /// When the map was last swept of idle principals.
    swept: Instant,
}

impl RateLimiter {
    pub fn new(max_tracked: usize) -> Self {
        Self {
            state: Mutex::new(State { next_free: HashMap::new(), swept: Instant::now() }),
            max_tracked: max_tracked.max(1),
        }
    }

    /// Counts one request of `key`; `Err(wait)` when it exceeds `quota`, with how long until
    /// one more would be allowed.
    pub fn check(&self, key: &str, quota: Quota, now: Instant) -> Result<(), Duration> {
        let interval = Duration::from_secs(60) / quota.per_minute.max(1);
        let tolerance = interval * (quota.burst.max(1) - 1);
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let tat = state.next_free.get(key).copied().filter(|t| *t > now).unwrap_or(now);
        let ahead = tat - now;
        if ahead > tolerance {
            return Err(ahead - tolerance);
        }
        if !state.next_free.contains_key(key) && state.next_free.len() >= self.max_tracked {
            state.make_room(now, self.max_tracked);
        }
        state.next_free.insert(key.to_string(), tat + interval);
        // A periodic sweep keeps idle principals from accumulating below the cap too.
        if now.saturating_duration_since(state.swept) > Duration::from_secs(60) {
            state.next_free.retain(|_, t| *t > now);
            state.swept = now;
        }
        Ok(())
    }

    /// Principals currently tracked.
    pub fn tracked(&self) -> usize {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).next_free.len()
    }
}

impl State {
    fn make_room(&mut self, now: Instant, max_tracked: usize) {
        self.next_free.retain(|_, t| *t > now);
        self.swept = now;
        if self.next_free.len() >= max_tracked {
            // All active: forget the one whose bucket is fullest (earliest arrival time).
            let excess = self.next_free.len() + 1 - max_tracked;
            let mut by_time: Vec<(Instant, String)> =
                self.next_free.iter().map(|(k, t)| (*t, k.clone())).collect();
            by_time.sort();
            for (_, key) in by_time.into_iter().take(excess) {
                self.next_free.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PER_SECOND: Quota = Quota { per_minute: 60, burst: 3 };

    #[test]
    fn burst_then_the_steady_rate() {
        let limiter = RateLimiter::new(10);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(limiter.check("a", PER_SECOND, t0), Ok(()), "burst request {i}");
        }
        let wait = limiter.check("a", PER_SECOND, t0).expect_err("burst spent");
        assert_eq!(wait, Duration::from_secs(1));
        // Denied requests cost nothing: the wait does not grow.
        assert_eq!(limiter.check("a", PER_SECOND, t0), Err(Duration::from_secs(1)));
        let half = t0 + Duration::from_millis(500);
        assert_eq!(limiter.check("a", PER_SECOND, half), Err(Duration::from_millis(500)));
        let later = t0 + Duration::from_secs(1);
        assert_eq!(limiter.check("a", PER_SECOND, later), Ok(()));
        assert!(limiter.check("a", PER_SECOND, later).is_err(), "one token per second");
        // Other principals are independent.
        assert_eq!(limiter.check("b", PER_SECOND, t0), Ok(()));
        // After a long idle period the whole burst is back.
        let idle = t0 + Duration::from_secs(30);
        for _ in 0..3 {
            assert_eq!(limiter.check("a", PER_SECOND, idle), Ok(()));
        }
        assert!(limiter.check("a", PER_SECOND, idle).is_err());
    }

    #[test]
    fn burst_of_one_is_strictly_spaced() {
        let limiter = RateLimiter::new(10);
        let quota = Quota { per_minute: 120, burst: 1 };
        let t0 = Instant::now();
        assert!(limiter.check("a", quota, t0).is_ok());
        assert_eq!(limiter.check("a", quota, t0), Err(Duration::from_millis(500)));
        assert!(limiter.check("a", quota, t0 + Duration::from_millis(500)).is_ok());
    }

    #[test]
    fn memory_stays_bounded() {
        let limiter = RateLimiter::new(100);
        let t0 = Instant::now();
        for i in 0..1000 {
            assert!(limiter.check(&format!("p{i}"), PER_SECOND, t0).is_ok());
            assert!(limiter.tracked() <= 100);
        }
        // When the cap is hit again, idle principals go first; here all of them are idle.
        let later = t0 + Duration::from_secs(5);
        assert!(limiter.check("fresh", PER_SECOND, later).is_ok());
        assert_eq!(limiter.tracked(), 1, "only the active principal is kept");

        // Below the cap, a periodic sweep drops idle principals too.
        let limiter = RateLimiter::new(1000);
        let t0 = Instant::now();
        for i in 0..10 {
            assert!(limiter.check(&format!("p{i}"), PER_SECOND, t0).is_ok());
        }
        assert_eq!(limiter.tracked(), 10);
        assert!(limiter.check("another", PER_SECOND, t0 + Duration::from_secs(61)).is_ok());
        assert_eq!(limiter.tracked(), 1);
    }
}
