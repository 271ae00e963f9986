//! Per-core event counters: plain cells, written only by their core.

use std::cell::Cell;

/// Adds `n` to a counter.
pub fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

macro_rules! counters {
    ($($name:ident: $help:literal,)*) => {
        /// Per-core event counters.
        #[derive(Default, Debug)]
        pub struct CoreStats {
            $(pub $name: Cell<u64>,)*
            pub closed_by: [Cell<u64>; CloseReason::ALL.len()],
            pub refused_by: [Cell<u64>; RefusedStatus::ALL.len()],
            /// The worker's access log (`log.access`; off by default): refusals reach it
            /// through `http::write::refuse`, which is handed these stats.
            pub access: super::access::AccessLog,
        }

        /// Every plain counter's name and help text, in a stable order.
        pub const COUNTERS: &[(&str, &str)] = &[$((stringify!($name), $help),)*];

        impl CoreStats {
            /// Values in the order of `COUNTERS`.
            pub fn values(&self) -> Vec<u64> {
                vec![$(self.$name.get(),)*]
            }
        }
    };
}

counters!(
    connections_accepted: "TCP connections accepted on the public and admin listeners.",
    connections_closed: "Upgraded connections that ended.",
    tls_handshakes: "TLS handshakes completed on the TLS listener.",
    tls_handshake_failed_no_shared_cipher: "TLS handshakes refused: the client offered no cipher suite, key exchange group or signature scheme the server accepts.",
    tls_handshake_failed_version: "TLS handshakes refused: the client offered only versions older than tls.min_version (TLS 1.1 and older are never accepted).",
    tls_handshake_failed_bad_client_cert: "TLS handshakes refused for a missing or invalid client certificate.",
    tls_handshake_failed_timeout: "TLS handshakes not finished within limits.handshake_timeout.",
    tls_handshake_failed_not_tls: "Connections to the TLS listener that did not start with a TLS record (a plain HTTP request gets 400 in clear).",
    tls_handshake_failed_other: "TLS handshakes that failed otherwise: a malformed or undecryptable message, the client's own alert, or the client closing first.",
    admin_tls_handshakes: "TLS handshakes completed on the admin listener (admin_tls.*).",
    admin_tls_handshake_failed: "Connections to the admin listener refused for TLS (admin_tls.*): a failed or unfinished handshake, a missing or invalid client certificate, or a plain request (answered 400 tls_required).",
    tls_version_1_2: "TLS handshakes that agreed on TLS 1.2.",
    tls_version_1_3: "TLS handshakes that agreed on TLS 1.3.",
    tls_cipher_tls13_aes_128_gcm_sha256: "TLS handshakes that agreed on TLS13_AES_128_GCM_SHA256.",
    tls_cipher_tls13_aes_256_gcm_sha384: "TLS handshakes that agreed on TLS13_AES_256_GCM_SHA384.",
    tls_cipher_tls13_chacha20_poly1305_sha256: "TLS handshakes that agreed on TLS13_CHACHA20_POLY1305_SHA256.",
    tls_cipher_ecdhe_ecdsa_aes_128_gcm_sha256: "TLS handshakes that agreed on TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256.",
    tls_cipher_ecdhe_ecdsa_aes_256_gcm_sha384: "TLS handshakes that agreed on TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384.",
    tls_cipher_ecdhe_ecdsa_chacha20_poly1305_sha256: "TLS handshakes that agreed on TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256.",
    tls_cipher_ecdhe_rsa_aes_128_gcm_sha256: "TLS handshakes that agreed on TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256.",
    tls_cipher_ecdhe_rsa_aes_256_gcm_sha384: "TLS handshakes that agreed on TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384.",
    tls_cipher_ecdhe_rsa_chacha20_poly1305_sha256: "TLS handshakes that agreed on TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256.",
    handshakes_refused: "Requests answered with a refusal or dropped before an upgrade.",
    handoffs_out: "Connections handed to the core that owns their session.",
    handoffs_in: "Connections received from another core.",
    handoffs_refused: "Handoffs refused because the owner's queue was full (503).",
    messages_received: "Complete data messages received from clients.",
    bytes_received: "Payload bytes of data frames received from clients.",
    messages_forwarded: "Messages forwarded whole to a peer (or echoed).",
    bytes_forwarded: "Payload bytes forwarded to a peer (or echoed).",
    messages_dropped_peer_absent: "Messages dropped because no peer was there and they could not be kept (session.buffer_bytes = 0, or a sender being closed).",
    peer_away_notices: "\"Mobile device not connected\" / \"Desktop not connected\" errors sent on /desktop and /mobile to a sender whose peer is away (at most one a second per sender).",
    messages_buffered: "Messages kept for an absent peer (or behind ones still being delivered).",
    messages_delivered_from_buffer: "Kept messages written to a peer that joined.",
    buffer_overflow_dropped: "Kept messages dropped to make room (session.overflow = drop_oldest).",
    buffer_overflow_closed: "Senders closed with 4005 because their buffer was full (session.overflow = close).",
    buffer_full_pauses: "Times a sender's reading paused because its buffer or the core's budget was full.",
    sessions_linger_expired: "Sessions freed after session.linger with no peer, with what they kept.",
    messages_dropped_linger: "Kept messages freed with a session whose linger expired.",
    resumes: "Connections that asked for resume=N.",
    messages_replayed: "Messages put back for delivery to a connection that resumed.",
    resume_gaps: "Resumes that asked for messages no longer kept (error event resume_gap, or close 4003).",
    acks_sent: "ack events sent to connections with resume= and events=1 (two-way resume).",
    acks_with_data: "ack events of acks_sent that rode in the same write as data forwarded to their connection (no write of their own).",
    receivers_closed_torn: "Receivers closed with 4004 because the sender of a message they held part of left or was replaced before its end.",
    messages_dropped_over_limit: "Messages refused for exceeding limits.max_message_bytes (closed with 1009).",
    pings_sent: "Keepalive pings the relay sent.",
    pongs_sent: "Pongs the relay sent in answer to a client's ping.",
    peers_dropped_keepalive: "Peers dropped after session.peer_timeout of silence.",
    peers_replaced: "Peers closed with 4001 because a newer connection took their role.",
    sessions_idle_closed: "Sessions closed with 4002 after session.idle_timeout.",
    protocol_errors: "Connections closed for a protocol violation (1002, 1007, 1009).",
    read_buffer_waits: "Times a reader waited because limits.max_read_buffers buffers were in use.",
    large_reads: "Reads into a large buffer (limits.large_read_buffer_bytes) by a connection streaming large frames.",
    auth_refused: "Requests refused for a missing, invalid, expired or too long-lived token (401) or one for another session or role (403).",
    client_cert_admitted: "Requests without a token admitted by a verified client certificate that a tls.client_grants entry names.",
    client_cert_refused: "Requests without a token whose verified client certificate no grant names (401 client_cert_not_granted) or whose grants are for another session or role (403); also counted in auth_refused.",
    origin_refused: "Requests refused because their Origin is not in security.allowed_origins (403).",
    ip_list_refused: "Connections to a public listener refused because their address (the direct peer, or the client a PROXY header or trusted proxy named) is in security.denied_cidrs or outside security.allowed_cidrs (403 ip_not_allowed).",
    admin_ip_refused: "Connections to the admin listener refused because their address is outside admin.allowed_cidrs (403 ip_not_allowed).",
    api_key_admitted: "Requests admitted by an API key of auth.api_keys_file.",
    ip_rate_refused: "Connections refused for exceeding limits.ip_connect_rate (429).",
    ip_open_refused: "Connections refused for exceeding limits.max_connections_per_ip (429).",
    ip_table_evictions: "Per-IP limiter entries evicted because limits.ip_table_size was reached.",
    capacity_refused: "Connections refused because limits.max_connections or limits.max_sessions was reached (503).",
    worker_full_refused: "Connections refused because limits.max_connections_per_worker was reached (503).",
    rate_limit_pauses: "Times a connection's reading paused because it exceeded limits.message_rate or limits.byte_rate.",
    rate_limit_pause_ms: "Total milliseconds connections spent paused by their message or byte rate.",
    fragment_floods: "Connections closed with 1008 for splitting a message into more than limits.max_frames_per_message frames.",
    pings_coalesced: "Client pings answered by a later ping's pong instead of their own (over limits.max_pending_pongs in one read).",
    peers_dropped_write_timeout: "Peers dropped because a write to them waited longer than limits.write_timeout.",
    peers_dropped_blocked_per_ip: "Peers dropped because blocked writes to their client address held more than limits.max_blocked_writes_per_ip read buffers on a worker.",
    peers_dropped_blocked_per_session: "Peers dropped because blocked writes to their session held more than limits.max_blocked_writes_per_session read buffers.",
    peers_dropped_pool_pressure: "Peers dropped because fewer than limits.pool_reserve_percent read buffers were free while a write to them was blocked.",
    cluster_carried_out: "Peers carried to their session's owner on another node (cluster mode).",
    cluster_carried_in: "Peers seated here that another node carried to this one.",
    cluster_carry_failed: "Peers refused 503 owner_unreachable: the owner node could not be reached or authenticated.",
    cluster_unavailable: "Peers refused 503 because the owner could not be looked up (Redis down, queue full, too slow) or moved meanwhile.",
    cluster_queue_full: "Owner lookups or releases refused because cluster.request_queue was full.",
    cluster_lookup_timeouts: "Owner lookups that took longer than cluster.lookup_timeout (503).",
    cluster_link_refused: "Connections to cluster.internal_listen refused for a wrong or missing proof (or timeout).",
    cluster_link_pending_ip_refused: "Connections to cluster.internal_listen closed at once: cluster.max_pending_links_per_ip openings from that address were not yet proved.",
    cluster_owner_unproved: "Links to an owner dropped because its ok carried no valid proof of cluster.secret (also counted in cluster_carry_failed).",
    cluster_link_pending_refused: "Connections to cluster.internal_listen closed at once: cluster.max_pending_links openings on the worker were not yet proved.",
    cluster_link_tls_failed: "TLS handshakes on cluster.internal_listen that failed (cluster.tls_* set): not TLS, no or untrusted client certificate, timeout, or another TLS error; no challenge is sent.",
    cluster_link_tls_bad_cert: "Of cluster_link_tls_failed: the carrier sent no certificate, or one the cluster CA (cluster.tls_ca_file) did not sign.",
    cluster_carry_tls_failed: "Links to an owner whose TLS handshake failed (cluster.tls_* set): it answered in clear, its certificate is not the cluster CA's or not for its address, or it refused ours (also counted in cluster_carry_failed).",
    cluster_cross_node_pairs: "Pairs formed here with a peer carried from another node.",
    cluster_cross_region_pairs: "Pairs formed here whose peers are in different regions (the hint, else the landing node's).",
    cluster_sessions_evicted: "Sessions closed here with 1012 because another node owns them (found on re-assert).",
    cluster_carries_closed_owner_gone: "Carried peers closed with 1012 because the owner node went away.",
    cluster_carries_owner_write_timeout: "Carried links ended (the client told 1012) because the owner did not take a write toward it within limits.write_timeout.",
    cluster_carries_dropped_blocked: "Carried peers among the peers_dropped_blocked_* and peers_dropped_pool_pressure drops: their client was dropped for not reading, or their link ended (1012) because the owner did not read it.",
    cluster_peers_dropped_node_gone: "Peers carried here dropped because their carrying node left the fleet.",
    cluster_hop_bytes: "Bytes moved by carried links, both ways.",
    accept_errors: "Times accept failed (EMFILE, ENFILE and the like) and the worker backed off.",
    access_log_lines: "Lines put in the access log (log.access): finished connections, refusals and bridged requests.",
    access_log_dropped: "Access-log lines lost because a write to log.access failed or was cut short (disk full, a stderr pipe nobody reads).",
    bridge_requests: "Bridged HTTP requests received (after admission), answered or not.",
    bridge_responses_2xx: "Bridged requests answered with a 2xx status (the agent's answer).",
    bridge_responses_3xx: "Bridged requests answered with a 3xx status.",
    bridge_responses_4xx: "Bridged requests answered with a 4xx status (the agent's, or the relay's refusal).",
    bridge_responses_5xx: "Bridged requests answered with a 5xx status (the agent's, or 502/503/504 from the relay).",
    bridge_timeouts: "Bridged requests the agent did not answer within bridge.timeout (504).",
    bridge_agent_absent: "Bridged requests for a session with no agent connected (502).",
    bridge_agent_gone: "Bridged requests failed because their agent's connection ended before it answered (502).",
    bridge_bad_answers: "Agent answers refused as malformed (their request, when known, got 502).",
    bridge_answers_too_large: "Agent answers refused for a body over bridge.max_response_bytes (502).",
    bridge_answers_unmatched: "Agent answers whose id matched no waiting request (late, duplicate or unknown).",
    bridge_client_gone: "Bridged requests whose client closed its connection while waiting for the agent (not answered).",
    bridge_busy_refused: "Bridged requests refused because the agent had bridge.max_in_flight waiting (503).",
    bridge_request_bytes: "Body bytes of bridged requests sent to agents.",
    bridge_response_bytes: "Body bytes of agent answers written to HTTP clients.",
    handshakes_refused_per_ip: "Connections closed at once because their client address had limits.max_handshakes_per_ip unfinished handshakes.",
    handshakes_refused_worker: "Connections closed at once because the worker had limits.max_handshakes unfinished handshakes.",
    proxy_header_refused: "Connections from a trusted proxy dropped for a missing or malformed PROXY protocol header (security.client_ip_header = proxy-protocol).",
    home_handoffs: "Connections handed to their client address's home core (behind a proxy, or without the steering program).",
    ip_release_overflow: "Open-connection counts that could not be given back to their home core (release queue full; should stay 0).",
    bridge_forged_requests: "Connections closed with 1008 for sending an http_request message towards an agent (only the relay sends those).",
    cors_preflights: "CORS preflights on the bridge answered by the relay (204) for an origin in cors.allowed_origins.",
    cors_preflights_refused: "CORS preflights on the bridge refused with 403 (no CORS headers): the origin is not in cors.allowed_origins.",
    bridge_write_timeouts: "Bridged responses dropped because the client did not take them within limits.write_timeout.",
    tunnels_opened: "Tunnels opened: a public port bound and tunnel_open sent (resumes not included).",
    tunnels_resumed: "Tunnels taken back with ?resume=KEY: within tunnel.reconnect_grace, or from a control connection not yet seen to drop.",
    tunnels_closed: "Tunnels closed: their port released (by close 1000, or at the end of their grace).",
    tunnels_refused_capacity: "Tunnel requests refused at_capacity (tunnel.max_tunnels, less tunnel.reserved_percent for a new one).",
    tunnels_refused_quota: "Tunnel requests refused quota_exceeded (tunnel.max_tunnels_per_subject or the credential's tunnels grant).",
    tunnels_refused_port: "Tunnel requests refused port_unavailable (the port asked for is taken, or no port of tunnel.ports is free).",
    tunnels_refused_bad_request: "Tunnel requests refused bad_request (a port outside tunnel.ports, a malformed or unknown resume key).",
    tunnel_connections_accepted: "TCP connections accepted on tunnels' public ports and announced with tunnel_connection.",
    tunnel_connections_refused: "Public connections closed at accept: the tunnel had tunnel.max_connections_per_tunnel, or its control connection was away.",
    tunnel_connections_joined: "Public connections joined to their data connection.",
    tunnel_accept_timeouts: "Public connections closed because no data connection came within tunnel.accept_timeout.",
    tunnel_idle_timeouts: "Joined tunnel connections closed after tunnel.idle_timeout without a byte either way.",
    tunnel_unknown_refused: "Data connections refused 404 tunnel_connection_unknown (unknown, expired or already used id).",
    tunnel_bytes_in: "Bytes spliced from public connections to their data connections.",
    tunnel_bytes_out: "Bytes spliced from data connections to their public connections.",
    tunnel_shaped_waits: "Times a tunnel's splice waited for tunnel.max_bandwidth's token bucket.",
    tunnels_taken_over: "Tunnels a resume took from a control connection the relay still held (the old one closed with 4001; also counted in tunnels_resumed).",
    tunnels_moved: "Tunnel requests answered with an error event moved (close 1013) naming a less loaded node (cluster mode, tunnel.redirect_margin_percent).",
    tunnels_placed_alone: "New tunnel requests kept here in cluster mode because the fleet could not be read (Redis down, the breaker open): no other node was considered.",
    large_reads_now: "Reads of large_reads made at once (recv(2) without waiting) rather than through the ring, so that the bytes are unmasked and written on while still in the core's cache.",
    proxy_requests: "Requests taken by a proxy route (proxy.routes), answered by an upstream or refused.",
    proxy_responses_2xx: "Proxied responses with a 1xx or 2xx status (an upstream's or ours).",
    proxy_responses_3xx: "Proxied responses with a 3xx status.",
    proxy_responses_4xx: "Proxied responses with a 4xx status, the proxy's own refusals included.",
    proxy_responses_5xx: "Proxied responses with a 5xx status, the proxy's own 502, 503 and 504 included.",
    proxy_refused_framing: "Proxied requests refused 400 before any upstream saw a byte: Content-Length with Transfer-Encoding, differing Content-Lengths, a coding other than chunked, a bad chunk size.",
    proxy_no_upstream: "Proxied requests refused 503 no_upstream: no healthy upstream in the region (and no fallback), or the route's max_concurrent reached.",
    proxy_upstream_failed: "Proxied requests answered 502: the upstream could not be reached or broke off before its response head.",
    proxy_upstream_timeouts: "Proxied requests answered 504: no response head within proxy.response_timeout.",
    proxy_retries: "Idempotent proxied requests sent again to another upstream after a failure before any byte reached the first.",
    proxy_ejections: "Upstreams ejected after proxy.eject_after consecutive failures (for proxy.eject_backoff, doubling).",
    proxy_upstream_connects: "Connections opened to upstreams.",
    proxy_upstream_reused: "Proxied requests sent on an idle pooled upstream connection (proxy.pool_max_idle).",
    proxy_bytes_up: "Request body bytes forwarded to upstreams.",
    proxy_bytes_down: "Response body bytes forwarded to clients.",
    proxy_upgrades: "Upgrades (WebSocket and others) through a proxy route that the upstream accepted with 101, joined byte for byte.",
    proxy_upgrades_refused: "Upgrades through a proxy route that the upstream answered with another status (passed on to the client).",
    proxy_upgrade_bytes_up: "Bytes from clients to upstreams over joined upgrades.",
    proxy_upgrade_bytes_down: "Bytes from upstreams to clients over joined upgrades.",
    proxy_upgrade_idle_timeouts: "Joined upgrades closed after proxy.upgrade_idle_timeout without a byte either way.",
    state_sessions_written: "Sessions whose kept messages and replay windows this worker handed to the state file at a stop (session.state_dir).",
    state_sessions_loaded: "Sessions restored from the state file at start (session.state_dir).",
    state_messages_not_loaded: "Messages in the state file not restored: past session.core_buffer_budget or session.replay_bytes, or kept with buffering off.",
    state_files_refused: "State files refused at start (torn, corrupt, another node's, a newer format, too large) and moved aside.",
    proxy_health_checks: "Active health checks sent to upstreams (routes with health_path; every worker checks).",
    proxy_health_checks_failed: "Active health checks that failed: no 2xx or 3xx answer within health_interval.",
    proxy_upstreams_down: "Upstreams a worker took out of rotation after health_fall failed checks in a row.",
    proxy_upstreams_up: "Upstreams a worker brought back after health_rise passed checks in a row.",
    proxy_upstream_stale: "Idle pooled upstream connections the upstream had closed, found when a request (or upgrade) sent on one got no answer; the request went again on a new connection to the same upstream, which is not counted as failing.",
    memory_trims: "Times a worker gave back the memory a storm left (the pool's idle read buffers, the registry's spare capacity, its allocator's freed pages): after its connections fell by a quarter, a burst of read buffers, or a storm that was over.",
    memory_trims_settled: "Of memory_trims, those made once a storm was over (nothing moved for a second): after a trim for a fall or for buffers, or after the open connections grew by 256.",
    handover_closed: "Connections a binary upgrade could not hand over, closed with 1012 so they reconnect: links carried to or from another node (cluster mode), TLS whose record state could not be carried, or not at rest within shutdown_grace.",
    handover_bridged_refused: "Bridged requests answered 503 (server_upgrading, Retry-After) because a binary upgrade began while they waited for their agent (the agent crosses; its answer would reach the new process).",
    handover_adopted: "Connections this process adopted from the one it upgraded, each going on as it was (nothing sent to its client).",
    state_ip_buckets_written: "Per-IP connection-rate buckets not full at a stop, written to the state file so a restart does not refill them (session.state_dir).",
    state_ip_buckets_loaded: "Per-IP connection-rate buckets put back from the state file at start (those still not full after the time they rested).",
    state_sessions_not_claimed: "Sessions in the state file left out at start because another node of the cluster owns them now.",
    handover_tls_adopted: "TLS connections this process adopted from the one it upgraded, on their carried traffic keys (counted in handover_adopted too).",
    handover_tls_closed: "TLS connections a binary upgrade closed with 1012 because their record state could not be carried (part of a record read, plaintext unread, or an unsupported suite); counted in handover_closed too.",
    tls_key_update_closed: "TLS connections on carried keys closed with 1012 because their client asked for a key update (or the keys' sequence numbers ran out): the record layer cannot derive the next key.",
    handover_ip_buckets: "Per-IP connection-rate buckets not full that a binary upgrade carried over, so a spent burst stays spent (those still not full when adopted).",
);

/// Why an upgraded connection ended, by the close code reported for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Normal,
    GoingAway,
    Protocol,
    InvalidData,
    Policy,
    TooBig,
    Replaced,
    Idle,
    ResumeGap,
    PeerAborted,
    BufferFull,
    Abnormal,
    Other,
}

impl CloseReason {
    pub const ALL: [CloseReason; 13] = [
        CloseReason::Normal,
        CloseReason::GoingAway,
        CloseReason::Protocol,
        CloseReason::InvalidData,
        CloseReason::Policy,
        CloseReason::TooBig,
        CloseReason::Replaced,
        CloseReason::Idle,
        CloseReason::ResumeGap,
        CloseReason::PeerAborted,
        CloseReason::BufferFull,
        CloseReason::Abnormal,
        CloseReason::Other,
    ];

    pub fn from_code(code: u16) -> CloseReason {
        match code {
            1000 | 1005 => CloseReason::Normal,
            1001 => CloseReason::GoingAway,
            1002 => CloseReason::Protocol,
            1007 => CloseReason::InvalidData,
            1008 => CloseReason::Policy,
            1009 => CloseReason::TooBig,
            4001 => CloseReason::Replaced,
            4002 => CloseReason::Idle,
            4003 => CloseReason::ResumeGap,
            4004 => CloseReason::PeerAborted,
            4005 => CloseReason::BufferFull,
            1006 => CloseReason::Abnormal,
            _ => CloseReason::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Normal => "normal",
            CloseReason::GoingAway => "going_away",
            CloseReason::Protocol => "protocol_error",
            CloseReason::InvalidData => "invalid_data",
            CloseReason::Policy => "policy",
            CloseReason::TooBig => "too_big",
            CloseReason::Replaced => "replaced",
            CloseReason::Idle => "idle",
            CloseReason::ResumeGap => "resume_gap",
            CloseReason::PeerAborted => "peer_aborted",
            CloseReason::BufferFull => "buffer_full",
            CloseReason::Abnormal => "abnormal",
            CloseReason::Other => "other",
        }
    }
}

/// How a request was refused before an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedStatus {
    Status(u16),
    Timeout,
}

impl RefusedStatus {
    pub const ALL: [RefusedStatus; 13] = [
        RefusedStatus::Status(400),
        RefusedStatus::Status(401),
        RefusedStatus::Status(403),
        RefusedStatus::Status(404),
        RefusedStatus::Status(405),
        RefusedStatus::Status(409),
        RefusedStatus::Status(413),
        RefusedStatus::Status(426),
        RefusedStatus::Status(429),
        RefusedStatus::Status(431),
        RefusedStatus::Status(503),
        RefusedStatus::Status(0),
        RefusedStatus::Timeout,
    ];

    pub fn label(self) -> String {
        match self {
            RefusedStatus::Status(0) => "other".into(),
            RefusedStatus::Status(s) => s.to_string(),
            RefusedStatus::Timeout => "timeout".into(),
        }
    }

    fn index(self) -> usize {
        RefusedStatus::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(RefusedStatus::ALL.len() - 2)
    }
}

impl CoreStats {
    pub fn closed(&self, code: u16) {
        bump(&self.connections_closed, 1);
        let i = CloseReason::ALL
            .iter()
            .position(|r| *r == CloseReason::from_code(code))
            .unwrap_or(0);
        bump(&self.closed_by[i], 1);
    }

    pub fn refused(&self, how: RefusedStatus) {
        bump(&self.handshakes_refused, 1);
        bump(&self.refused_by[how.index()], 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_counters_land_in_their_slot() {
        let s = CoreStats::default();
        s.closed(4001);
        s.closed(1006);
        s.closed(3000);
        s.refused(RefusedStatus::Status(409));
        s.refused(RefusedStatus::Status(418));
        s.refused(RefusedStatus::Timeout);
        let closed: Vec<u64> = s.closed_by.iter().map(Cell::get).collect();
        assert_eq!(closed, vec![0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1]);
        let refused: Vec<u64> = s.refused_by.iter().map(Cell::get).collect();
        assert_eq!(refused, vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(
            (s.connections_closed.get(), s.handshakes_refused.get()),
            (3, 3)
        );
        assert_eq!(s.values().len(), COUNTERS.len());
    }
}
