//! The cluster thread's stand-ins in a build without the `cluster` feature, which leaves the
//! Redis client out. Such a build refuses `cluster.redis_url` when the configuration is
//! checked (`config::validate`), so the server never asks for a member; these keep the
//! server's code free of `cfg`.

use crate::context::Shared;
use crate::fleet::ask::{Command, Request};
use crate::fleet::view::View;
use std::sync::Arc;

/// Why cluster mode cannot start in this build; said by `cluster status` and by the config
/// check (in its own words, which name the key).
pub const NOT_BUILT: &str = "this ringrelay was built without the `cluster` feature \
    (build with the default features, or `--features cluster`)";

/// What the cluster thread would be given; the same fields as in a cluster build.
pub struct Wiring {
    pub requests: flume::Receiver<Request>,
    pub commands: Vec<flume::Sender<Command>>,
}

/// A member that can never exist: `start` always fails.
pub enum Member {}

impl Member {
    pub fn start(
        _url: &str,
        _view: Arc<View>,
        _shared: Arc<Shared>,
        _wiring: Wiring,
    ) -> std::io::Result<Member> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            NOT_BUILT,
        ))
    }

    pub fn stop(self) {
        match self {}
    }

    pub fn first_round(&self, _wait: std::time::Duration) -> bool {
        match *self {}
    }
}

/// No cluster in this build, so nothing is ever claimed (the config check refuses
/// `cluster.redis_url` before this could run).
pub fn claim_back(
    _url: &str,
    _me: &crate::fleet::view::Identity,
    _session_ttl: std::time::Duration,
    _ids: &[String],
) -> std::io::Result<Vec<bool>> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        NOT_BUILT,
    ))
}
