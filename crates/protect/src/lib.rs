//! Inline protection as pure logic: what the gateway asks at the door and tells after each
//! login, refusal, statement and session end. No sockets, no tokio, no clock of its own: every
//! call is given the time ([`Now`]), so tests run hours of windows in microseconds and the
//! gateway can use paused time.
//!
//! - [`Engine`]: per-source rate limits (new connections, login attempts), a ban list with
//!   repeat-offender escalation, and the detections (brute force, password spraying, success
//!   after failures, listener scans, connection spikes, first-seen sources, privilege changes,
//!   egress). Memory is bounded: at most `max_sources` sources, each with capped state, the
//!   least recently seen forgotten first, idle state swept after its window.
//! - [`Finding`]: what a detection reports, in the JSON shape of `sumun flows hunt` findings.
//! - [`IpSet`] and [`GeoDb`]: address sets and country lookup for the door's explicit rules
//!   ([`Rules`]).

mod capped;
mod engine;
mod finding;
mod geo;
mod ipset;
mod rate;
mod sql;

pub use capped::CappedMap;
pub use engine::{Admission, Ban, Engine, Place};
pub use finding::{Evidence, Finding, Severity};
pub use geo::{GeoDb, GeoError};
pub use ipset::{IpSet, RuleDenial, Rules};
pub use rate::SlidingCounter;
pub use sql::privilege_change;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The time of one call: monotonic for windows, wall clock (unix seconds) for what is shown.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub unix: u64,
}

impl Now {
    pub fn system() -> Now {
        Now {
            mono: Instant::now(),
            unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    /// `self` moved on by `d` (tests).
    pub fn after(self, d: std::time::Duration) -> Now {
        Now {
            mono: self.mono + d,
            unix: self.unix + d.as_secs(),
        }
    }
}
