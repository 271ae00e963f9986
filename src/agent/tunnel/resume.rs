//! `--resume-file`: the tunnel's resume key kept on disk, so a client restarted within the
//! relay's reconnect grace (a crash, a deploy) asks for its old port with it and gets it back.
//! Written aside and renamed (never half a file), mode 0600: the key is a credential for the
//! port while the grace lasts.

use serde_json::json;
use std::path::Path;

/// The key a previous run left, if the file holds one.
pub fn load(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("resume")?
        .as_str()
        .filter(|k| !k.is_empty())
        .map(str::to_string)
}

/// Keeps `key` (and, for the operator reading the file, `public`) at `path`.
pub fn store(path: &Path, key: &str, public: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut aside = path.as_os_str().to_owned();
    aside.push(".tmp");
    let aside = std::path::PathBuf::from(aside);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&aside)?;
    f.write_all(
        json!({"resume": key, "public": public})
            .to_string()
            .as_bytes(),
    )?;
    f.sync_all()?;
    std::fs::rename(&aside, path)
}

/// After a clean close (which releases the port) the key is worth nothing: removed.
pub fn forget(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn stored_keys_load_back_private() {
        let dir = std::env::temp_dir().join(format!("rr-tunnel-resume-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resume.json");
        assert_eq!(load(&path), None);
        store(&path, "k1", "h:20001").unwrap();
        store(&path, "k2", "h:20001").unwrap();
        assert_eq!(load(&path).as_deref(), Some("k2"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "not json").unwrap();
        assert_eq!(load(&path), None);
        forget(&path);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
