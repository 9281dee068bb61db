//! The server's CSR limit: a rate (`CSRMaxPerSecond`) or a concurrency cap (`CSRMaxConcurrent`).
//! A request waits at most 500 ms for its turn, then fails with "Rate limit reached".

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::CaError;

/// Longest wait for a signing slot, as Consul's.
const MAX_WAIT: Duration = Duration::from_millis(500);

struct Limits {
    per_second: f64,
    concurrent: u32,
    next_slot: Instant,
    semaphore: Arc<Semaphore>,
}

/// The limiter, shared by every signing request of a server.
pub struct CsrLimiter {
    limits: Mutex<Limits>,
}

/// Held while a signing runs (concurrency mode); releases its slot on drop.
pub struct CsrPermit(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl CsrLimiter {
    /// A limiter with these limits (0 disables each).
    pub fn new(per_second: f64, concurrent: u32) -> CsrLimiter {
        CsrLimiter {
            limits: Mutex::new(Limits {
                per_second,
                concurrent,
                next_slot: Instant::now(),
                semaphore: Arc::new(Semaphore::new(concurrent as usize)),
            }),
        }
    }

    /// Applies new limits (after a CA configuration change).
    pub fn set(&self, per_second: f64, concurrent: u32) {
        let mut l = self.limits.lock();
        if l.concurrent != concurrent {
            l.semaphore = Arc::new(Semaphore::new(concurrent as usize));
        }
        l.per_second = per_second;
        l.concurrent = concurrent;
    }

    /// Waits for a turn (at most 500 ms). The rate mode spaces requests `1/rate` apart with a
    /// burst of one; the concurrency mode holds a slot until the permit drops.
    pub async fn acquire(&self) -> Result<CsrPermit, CaError> {
        let (slot, semaphore) = {
            let mut l = self.limits.lock();
            if l.per_second > 0.0 {
                let now = Instant::now();
                let slot = l.next_slot.max(now);
                if slot.duration_since(now) > MAX_WAIT {
                    return Err(CaError::RateLimited);
                }
                l.next_slot = slot + Duration::from_secs_f64(1.0 / l.per_second);
                (Some(slot), None)
            } else if l.concurrent > 0 {
                (None, Some(l.semaphore.clone()))
            } else {
                (None, None)
            }
        };
        if let Some(slot) = slot {
            tokio::time::sleep_until(slot).await;
            return Ok(CsrPermit(None));
        }
        if let Some(sem) = semaphore {
            return match tokio::time::timeout(MAX_WAIT, sem.acquire_owned()).await {
                Ok(Ok(p)) => Ok(CsrPermit(Some(p))),
                _ => Err(CaError::RateLimited),
            };
        }
        Ok(CsrPermit(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_mode_spaces_requests_and_refuses_past_half_a_second() {
        let l = CsrLimiter::new(10.0, 0);
        let start = Instant::now();
        for _ in 0..6 {
            l.acquire().await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        // Seven more at once: five fit within the next 500 ms, the rest would wait longer.
        let r = tokio::join!(
            l.acquire(),
            l.acquire(),
            l.acquire(),
            l.acquire(),
            l.acquire(),
            l.acquire(),
            l.acquire()
        );
        let results = [r.0, r.1, r.2, r.3, r.4, r.5, r.6];
        let limited = results
            .iter()
            .filter(|r| matches!(r, Err(CaError::RateLimited)))
            .count();
        assert_eq!((results.len() - limited, limited), (5, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_mode_caps_signings_in_flight() {
        let l = CsrLimiter::new(0.0, 2);
        let a = l.acquire().await.unwrap();
        let _b = l.acquire().await.unwrap();
        assert_eq!(l.acquire().await.err(), Some(CaError::RateLimited));
        drop(a);
        assert!(l.acquire().await.is_ok());
        let unlimited = CsrLimiter::new(0.0, 0);
        for _ in 0..100 {
            unlimited.acquire().await.unwrap();
        }
    }
}
