//! Choosing an upstream instance: least-request with two random choices (the default, as
//! Envoy's `LEAST_REQUEST`), or round-robin; a failed connect asks again without the instances
//! already tried.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How instances are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Of two instances drawn at random, the one with fewer requests in flight.
    #[default]
    LeastRequest,
    /// Each in turn.
    RoundRobin,
}

impl Policy {
    /// Parses the names the upstream `Config` accepts (`least_request`, `round_robin`).
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "" | "least_request" => Some(Policy::LeastRequest),
            "round_robin" => Some(Policy::RoundRobin),
            _ => None,
        }
    }
}

/// One instance of an upstream: where to connect and who must answer there.
#[derive(Debug)]
pub struct Endpoint {
    /// The instance's public listener (its sidecar's address and port).
    pub addr: SocketAddr,
    /// The datacenter the instance runs in (part of its expected SPIFFE ID).
    pub datacenter: String,
    /// Requests or connections in flight to it.
    active: AtomicUsize,
}

impl Endpoint {
    /// An instance at `addr` in `datacenter`, with nothing in flight.
    pub fn new(addr: SocketAddr, datacenter: impl Into<String>) -> Endpoint {
        Endpoint {
            addr,
            datacenter: datacenter.into(),
            active: AtomicUsize::new(0),
        }
    }

    /// Requests or connections in flight.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

/// Counts one request or connection in flight on an endpoint until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    /// The endpoint it counts on.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The instances of one upstream as last discovered, and the policy over them.
#[derive(Debug)]
pub struct Balancer {
    policy: Policy,
    endpoints: Vec<Arc<Endpoint>>,
    next: AtomicUsize,
}

impl Balancer {
    /// A balancer over `endpoints`.
    pub fn new(policy: Policy, endpoints: Vec<Arc<Endpoint>>) -> Balancer {
        Balancer {
            policy,
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// The instances.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Picks an instance not in `tried` (positions in [`Balancer::endpoints`]) and counts a
    /// request on it; `None` when every instance was tried. `random(n)` draws uniformly from
    /// `0..n` (passed in so tests are exact).
    pub fn pick(
        &self,
        tried: &[usize],
        mut random: impl FnMut(usize) -> usize,
    ) -> Option<(usize, InFlight)> {
        let left: Vec<usize> = (0..self.endpoints.len())
            .filter(|i| !tried.contains(i))
            .collect();
        let chosen = match (left.len(), self.policy) {
            (0, _) => return None,
            (1, _) => left[0],
            (n, Policy::RoundRobin) => left[self.next.fetch_add(1, Ordering::Relaxed) % n],
            (n, Policy::LeastRequest) => {
                let a = random(n) % n;
                // A second draw among the others, so the two are distinct.
                let b = (a + 1 + random(n - 1) % (n - 1)) % n;
                let (ea, eb) = (&self.endpoints[left[a]], &self.endpoints[left[b]]);
                if eb.active() < ea.active() {
                    left[b]
                } else {
                    left[a]
                }
            }
        };
        let endpoint = self.endpoints[chosen].clone();
        endpoint.active.fetch_add(1, Ordering::Relaxed);
        Some((chosen, InFlight(endpoint)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: u16) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| Arc::new(Endpoint::new(([10, 0, 0, 1], 20000 + i).into(), "dc1")))
            .collect()
    }

    #[test]
    fn least_request_prefers_the_idler_of_two() {
        let b = Balancer::new(Policy::LeastRequest, endpoints(3));
        // Draws 0 then 0 (→ the next one): instances 0 and 1, both idle: the first wins.
        let (i, first) = b.pick(&[], |_| 0).unwrap();
        assert_eq!(i, 0);
        // Instance 0 is now busy: the same draws pick 1.
        let (j, _second) = b.pick(&[], |_| 0).unwrap();
        assert_eq!(j, 1);
        assert_eq!(b.endpoints()[0].active(), 1);
        drop(first);
        assert_eq!(
            b.endpoints()[0].active(),
            0,
            "dropping the guard ends the request"
        );
    }

    #[test]
    fn retries_skip_what_was_tried_and_run_out() {
        let b = Balancer::new(Policy::LeastRequest, endpoints(3));
        let mut tried = Vec::new();
        for _ in 0..3 {
            let (i, _g) = b.pick(&tried, |n| n - 1).unwrap();
            assert!(!tried.contains(&i));
            tried.push(i);
        }
        assert!(b.pick(&tried, |_| 0).is_none());
        assert!(Balancer::new(Policy::RoundRobin, vec![])
            .pick(&[], |_| 0)
            .is_none());
    }

    #[test]
    fn round_robin_takes_turns() {
        let b = Balancer::new(Policy::RoundRobin, endpoints(3));
        let picks: Vec<usize> = (0..6).map(|_| b.pick(&[], |_| 0).unwrap().0).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(Policy::parse("round_robin"), Some(Policy::RoundRobin));
        assert_eq!(Policy::parse(""), Some(Policy::LeastRequest));
        assert_eq!(Policy::parse("random"), None);
    }

    #[test]
    fn two_choices_spread_load() {
        // With a fair random source, no instance gets far more than its share.
        let b = Balancer::new(Policy::LeastRequest, endpoints(4));
        let mut held = Vec::new();
        let mut seed = 7u64;
        let mut rnd = move |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as usize) % n
        };
        for _ in 0..400 {
            held.push(b.pick(&[], &mut rnd).unwrap().1);
        }
        for e in b.endpoints() {
            assert!((90..=110).contains(&e.active()), "{}", e.active());
        }
    }
}
