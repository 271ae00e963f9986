//! The state file on disk: written whole to a temporary file, fsynced, renamed over the old
//! one and the directory fsynced, so a crash mid-write leaves the previous file or none,
//! never a torn one under the real name; read whole, and moved aside when refused.

use super::format::{self, FormatError, StateFile};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The file's name in `session.state_dir`.
pub const FILE_NAME: &str = "ringrelay.state";
/// The temporary file a write goes to before its rename.
const TEMP_NAME: &str = "ringrelay.state.tmp";

/// What reading the directory found.
#[derive(Debug)]
pub enum Loaded {
    /// No state file: a first start, or the last stop wrote nothing.
    Nothing,
    /// Every session and limiter state in the file. The caller removes the file (`discard`)
    /// once they are in force: a later crash must not restore them twice, and a start that
    /// fails before must not lose them.
    State(StateFile),
    /// The file was refused and moved aside to `moved_to` (or could not be moved: `None`).
    Refused {
        why: Refusal,
        moved_to: Option<PathBuf>,
    },
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("{size} bytes, more than the {limit} the limits allow to be kept")]
    TooLarge { size: u64, limit: u64 },
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
}

impl Refusal {
    /// The suffix the refused file is renamed with, saying why at a glance.
    fn suffix(&self) -> &'static str {
        match self {
            Refusal::Format(FormatError::Foreign) => "foreign",
            Refusal::Format(FormatError::OtherNode { .. }) => "other-node",
            Refusal::Format(FormatError::Newer(_) | FormatError::Unknown(_)) => "version",
            Refusal::Format(_) => "corrupt",
            Refusal::TooLarge { .. } => "too-large",
            Refusal::Io(_) => "unreadable",
        }
    }
}

/// Makes `dir` if it is missing and removes a temporary file a crash mid-write left. Run at
/// start, so a directory that cannot be written is an error before anything is served.
pub fn prepare(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    match fs::remove_file(dir.join(TEMP_NAME)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    // A write test: the stop would otherwise learn of a read-only directory too late.
    let probe = dir.join(TEMP_NAME);
    File::create(&probe)?;
    fs::remove_file(&probe)
}

/// Writes `state` for `node`, atomically: the file under its name is the old one or the new
/// one whole. Returns the bytes written.
pub fn save(dir: &Path, node: &str, state: &StateFile) -> io::Result<u64> {
    let temp = dir.join(TEMP_NAME);
    // Clients' messages at rest: readable by the relay's user only, whatever the umask.
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?
    };
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut written = 0u64;
    let mut put = |w: &mut BufWriter<File>, b: &[u8]| {
        written += b.len() as u64;
        w.write_all(b)
    };
    put(&mut w, &format::header(node))?;
    for s in &state.sessions {
        put(&mut w, &format::session_record(s))?;
    }
    for l in &state.limits {
        put(&mut w, &format::limits_record(l))?;
    }
    let records = state.sessions.len() + state.limits.len();
    put(&mut w, &format::end_record(records as u64))?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, dir.join(FILE_NAME))?;
    File::open(dir)?.sync_all()?;
    Ok(written)
}

/// Removes the state file once what it held is in force in the workers.
pub fn discard(dir: &Path) -> io::Result<()> {
    match fs::remove_file(dir.join(FILE_NAME)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => File::open(dir)?.sync_all(),
    }
}

/// Reads the state file for `node`, refusing one over `max_bytes` unread. A refused file is
/// moved aside (`ringrelay.state.refused-<why>-<unix ms>`), never half loaded and never read
/// again.
pub fn load(dir: &Path, node: &str, max_bytes: u64) -> Loaded {
    let path = dir.join(FILE_NAME);
    let read = || -> Result<Option<StateFile>, Refusal> {
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let size = file.metadata()?.len();
        if size > max_bytes {
            return Err(Refusal::TooLarge {
                size,
                limit: max_bytes,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes)?;
        Ok(Some(format::decode_file(&bytes, node)?))
    };
    match read() {
        Ok(None) => Loaded::Nothing,
        Ok(Some(state)) => Loaded::State(state),
        Err(why) => {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let aside = dir.join(format!("{FILE_NAME}.refused-{}-{ms}", why.suffix()));
            let moved_to = fs::rename(&path, &aside).ok().map(|()| aside);
            Loaded::Refused { why, moved_to }
        }
    }
}
