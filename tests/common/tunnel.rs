//! A relay with TCP tunnels on, for the tunnel test files: each file names its own band of
//! ports so that test processes running side by side never ask for the same one.

use super::TestServer;

/// A band of ports for a tunnel test process: `slots` ranges of 40 from `base`, the one
/// picked by pid, below the kernel's ephemeral range so no client socket holds one.
pub struct TunnelPorts {
    pub base: u32,
    pub slots: u32,
}

impl TunnelPorts {
    /// This process's range, as `tunnel.ports` takes it (`first-last`).
    pub fn range(&self) -> String {
        let first = self.base + (std::process::id() % self.slots) * 40;
        format!("{}-{}", first, first + 39)
    }

    /// A two-worker relay on `driver` with tunnels enabled on this process's range, plus `env`.
    pub fn server(&self, driver: &str, env: &[(&str, &str)]) -> TestServer {
        let range = self.range();
        let mut all = vec![
            ("RINGRELAY_TUNNEL_ENABLED", "true"),
            ("RINGRELAY_TUNNEL_PORTS", range.as_str()),
        ];
        all.extend_from_slice(env);
        TestServer::start(driver, 2, &all)
    }
}
