//! Choosing the I/O driver: io_uring where the kernel allows it, epoll otherwise.
#![forbid(unsafe_code)]

use crate::config::DriverChoice;
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use std::future::Future;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("driver = \"io_uring\" was asked for, but io_uring cannot be set up here")]
pub struct UringUnavailable;

/// Resolves `auto`; `io_uring` asked for explicitly and missing is an error, not a fallback.
pub fn resolve(choice: DriverChoice) -> Result<Driver, UringUnavailable> {
    let uring = monoio::utils::detect_uring();
    match choice {
        DriverChoice::Epoll => Ok(Driver::Epoll),
        DriverChoice::IoUring if uring => Ok(Driver::IoUring),
        DriverChoice::IoUring => Err(UringUnavailable),
        DriverChoice::Auto => Ok(if uring {
            Driver::IoUring
        } else {
            Driver::Epoll
        }),
    }
}

/// Submission queue size: in-flight operations are not limited by it, only one batch of
/// submissions, so a few thousand is plenty at 64 bytes an entry.
const URING_ENTRIES: u32 = 4096;

/// A runtime on io_uring whose ring is told that only this thread submits to it and that the
/// kernel need not interrupt it to post a completion (`COOP_TASKRUN`): the worker enters the
/// kernel on every turn anyway, so completions are posted then instead of by an inter-processor
/// interrupt. Measured: 0.93x the relay's CPU per 64 B message (0.86-1.01 over 6 alternated
/// rounds, docs/performance.md). A kernel older than 6.0 refuses the flags; the ring is then
/// made without them.
pub fn uring_runtime(
    entries: u32,
) -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<IoUringDriver>>> {
    let mut urb = io_uring::IoUring::builder();
    urb.setup_coop_taskrun().setup_single_issuer();
    let built = RuntimeBuilder::<IoUringDriver>::new()
        .with_entries(entries)
        .uring_builder(urb)
        .enable_timer()
        .build();
    if let Ok(rt) = built {
        return Ok(rt);
    }
    RuntimeBuilder::<IoUringDriver>::new()
        .with_entries(entries)
        .enable_timer()
        .build()
}

/// Runs `fut` to completion on a runtime of the chosen driver on this thread.
pub fn block_on<F: Future<Output = ()>>(driver: Driver, fut: F) -> std::io::Result<()> {
    match driver {
        Driver::IoUring => uring_runtime(URING_ENTRIES)?.block_on(fut),
        Driver::Epoll => RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()?
            .block_on(fut),
    }
    Ok(())
}
