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

/// Runs `fut` to completion on a runtime of the chosen driver on this thread.
pub fn block_on<F: Future<Output = ()>>(driver: Driver, fut: F) -> std::io::Result<()> {
    match driver {
        Driver::IoUring => RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(URING_ENTRIES)
            .enable_timer()
            .build()?
            .block_on(fut),
        Driver::Epoll => RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()?
            .block_on(fut),
    }
    Ok(())
}
