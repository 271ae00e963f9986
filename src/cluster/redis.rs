//! The one way this crate opens a Redis connection: the cluster thread (`member`, `owners`)
//! and `ringrelay cluster status` both come through here, so every Redis call has a timeout
//! and the figure lives in one place.

use std::time::Duration;

/// Every Redis call of the cluster thread gives up after this, so a partitioned Redis cannot
/// hold the thread; also the longest the thread waits for a worker's list of its sessions.
pub const IO_TIMEOUT: Duration = Duration::from_secs(1);

/// A client for `url` (nothing is connected yet); a malformed URL is an invalid input.
pub fn client(url: &str) -> std::io::Result<redis::Client> {
    redis::Client::open(url)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))
}

/// A connection whose opening, reads and writes each give up after `timeout`.
pub fn connect(client: &redis::Client, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    Ok(con)
}
