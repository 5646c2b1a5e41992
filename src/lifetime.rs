//! STUB for merge: helper A's lifetime interface (signatures only).

use std::time::Duration;

/// Vault's and OpenBao's built-in default and maximum lease TTL (768h), used where a mount says 0.
pub const SYSTEM_DEFAULT: Duration = Duration::from_secs(768 * 3600);

/// TTLs as a mount or role states them; `None` = not set (0 in Vault's answers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ttls {
    /// Default TTL.
    pub default: Option<Duration>,
    /// Maximum TTL.
    pub max: Option<Duration>,
}

/// Where the mount part came from (for messages and the Event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A role answered.
    Role,
    /// The mount's tune answered.
    Tune,
    /// Only the mount's config.
    MountConfig,
}

/// The lifetime of credentials read from one dynamic path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// What a new lease (or certificate) gets.
    pub ttl: Duration,
    /// The most renewals can reach.
    pub max: Duration,
    /// False for PKI certificates.
    pub renewable: bool,
    /// Where it came from.
    pub source: Source,
}

impl Lifetime {
    /// What the workload's pods can count on: `max` in daemon mode when renewable, else `ttl`.
    pub fn effective(&self, daemon_mode: bool) -> Duration {
        if daemon_mode && self.renewable {
            self.max
        } else {
            self.ttl
        }
    }
}
