//! `--mode tunnel-echo`: a TCP echo service on `--listen`, the local service behind a tunnel
//! in benchmarks (scripts/tunnel_bench.sh puts the same one behind ringrelay and bore). Each
//! connection gets back every byte it sends; its FIN is passed back once all is echoed. One
//! 64 KiB buffer per connection, a copy loop: cheap beside what is measured.

use crate::config::DriverChoice;
use crate::load::service::{bind, ServiceError};
use crate::runtime::driver;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use std::io::Write as _;
use std::net::SocketAddr;

const BUF: usize = 64 << 10;

#[derive(Debug, Clone)]
pub struct EchoPlan {
    pub listen: SocketAddr,
    pub driver: DriverChoice,
}

pub type EchoError = ServiceError;

/// Binds, prints `tunnel-echo listening on ADDR` on stdout and serves until stopped.
pub fn serve(plan: &EchoPlan) -> Result<(), EchoError> {
    let std = bind(plan.listen)?;
    let driver = driver::resolve(plan.driver)?;
    let addr = std.local_addr().map_err(EchoError::Runtime)?;
    println!("tunnel-echo listening on {addr} ({})", driver.name());
    let _ = std::io::stdout().flush();
    driver::block_on(driver, async move {
        let listener = TcpListener::from_std(std).expect("a bound listener");
        loop {
            if let Ok((conn, _)) = listener.accept().await {
                monoio::spawn(echo(conn));
            }
        }
    })
    .map_err(EchoError::Runtime)
}

async fn echo(mut conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::with_capacity(BUF);
    loop {
        buf.clear();
        let (r, b) = conn.read(buf).await;
        buf = b;
        match r {
            Ok(0) => {
                let _ = conn.shutdown().await;
                return;
            }
            Ok(_) => {}
            Err(_) => return,
        }
        let (r, b) = conn.write_all(buf).await;
        buf = b;
        if r.is_err() {
            return;
        }
    }
}
