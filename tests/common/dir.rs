//! A directory of one test's own (config, key and log files), removed when the test ends.

use std::path::PathBuf;

pub struct Dir(pub PathBuf);

impl Dir {
    /// `tag` names the test file, `name` the test (and its driver): parallel tests never share
    /// one, and a run's leftovers are cleared first.
    pub fn new(tag: &str, name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("rr-{tag}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    /// Writes `name`, aside and then renamed, as an editor or a deploy tool would: a reload
    /// never reads half a file.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
