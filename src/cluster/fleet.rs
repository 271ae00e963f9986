//! Reading the fleet from Redis: `SCAN` over the node keys, then one `MGET`. Shared by the
//! membership thread and `ringrelay cluster status`.

use crate::fleet::node::{node_pattern, parse_fleet, NodeInfo};

/// Keys asked for per SCAN step.
const SCAN_COUNT: usize = 100;

/// What one read found.
pub struct Fleet {
    pub nodes: Vec<NodeInfo>,
    /// Entries under the prefix that are not a node's.
    pub unreadable: usize,
    /// Redis commands the read took.
    pub commands: u64,
}

pub fn read(con: &mut dyn redis::ConnectionLike, prefix: &str) -> redis::RedisResult<Fleet> {
    let pattern = node_pattern(prefix);
    let mut commands = 0;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        commands += 1;
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .cursor_arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query(con)?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    // SCAN may return a key twice.
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return Ok(Fleet {
            nodes: Vec::new(),
            unreadable: 0,
            commands,
        });
    }
    commands += 1;
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(con)?;
    let (nodes, unreadable) = parse_fleet(&values);
    Ok(Fleet {
        nodes,
        unreadable,
        commands,
    })
}
