//! The seam under the file store: the six things it does to its log file, so that its tests
//! can put a disk that fails and crashes under it (`tests.rs`); and [`FsLog`], the real one, on
//! `std::fs`.
//!
//! The seam is private to the file store: it is not a way for users to plug in their own I/O,
//! and [`FileStorage`](super::FileStorage) keeps every rule about *when* to write, sync and cut
//! back. An implementation only says what each call did, including how it failed.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const LOG_NAME: &str = "paxos.log";
const TMP_NAME: &str = "paxos.log.tmp";

/// The log file of a [`FileStorage`](super::FileStorage), as the file store sees it.
pub(super) trait Log: fmt::Debug + Send + Sync {
    /// The whole log, as the last write (or a crash) left it.
    fn read_all(&mut self) -> io::Result<Vec<u8>>;
    /// Writes `bytes` at the end of the log. On an error, any prefix of them may be written.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes the log's bytes and length durable. On an error, any part of what changed since
    /// the last successful sync may or may not be durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the log to `len` bytes; durable after the next successful [`Log::sync`].
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Writes `bytes` to a new file beside the log and makes it durable. The log itself is not
    /// touched, whether this succeeds or fails.
    fn prepare_replacement(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Puts the prepared file in the log's place, durably; later appends go to it. On an error,
    /// a crash may leave either file as the log, and later appends may go to either.
    fn install_replacement(&mut self) -> io::Result<()>;
}

/// The log as a file `paxos.log` in a directory, compacted through `paxos.log.tmp`.
#[derive(Debug)]
pub(super) struct FsLog {
    dir: PathBuf,
    file: File,
}

impl FsLog {
    /// Opens the log in `dir`, creating the directory (and missing parents) and the file if they
    /// do not exist; each new entry is made durable by fsyncing the directory that holds it.
    pub(super) fn open(dir: &Path) -> io::Result<FsLog> {
        create_dir_durably(dir)?;
        let path = dir.join(LOG_NAME);
        let file = OpenOptions::new().create(true).read(true).append(true).open(path)?;
        // The log's entry in `dir`, in case it was just created (cheap when it was not).
        sync_dir(dir)?;
        Ok(FsLog { dir: dir.to_path_buf(), file })
    }
}

impl Log for FsLog {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        self.file.seek(SeekFrom::Start(0))?;
        let mut bytes = Vec::new();
        self.file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        // The file is opened in append mode: every write goes to its current end, also after a
        // truncate.
        self.file.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        // fdatasync: the data and the length (needed to read it back), not the timestamps.
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn prepare_replacement(&mut self, bytes: &[u8]) -> io::Result<()> {
        let path = self.dir.join(TMP_NAME);
        let written = File::create(&path).and_then(|mut tmp| {
            tmp.write_all(bytes)?;
            tmp.sync_all()
        });
        if written.is_err() {
            // Give back the space of a half-written file (the disk may be full); if this fails
            // too, the next attempt truncates it.
            let _ = fs::remove_file(&path);
        }
        written
    }

    fn install_replacement(&mut self) -> io::Result<()> {
        let path = self.dir.join(LOG_NAME);
        fs::rename(self.dir.join(TMP_NAME), &path)?;
        // From here `self.file` is the old, unlinked log: appends to it would be lost.
        self.file = OpenOptions::new().read(true).append(true).open(path)?;
        sync_dir(&self.dir)
    }
}

/// Creates `dir` and its missing parents, and fsyncs the directory holding each new one.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let mut new_dirs = Vec::new();
    let mut next = Some(dir);
    while let Some(missing) = next.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        new_dirs.push(missing);
        next = missing.parent();
    }
    fs::create_dir_all(dir)?;
    // Outermost first: each directory's entry is durable before the one made inside it.
    for new_dir in new_dirs.iter().rev() {
        let parent = new_dir.parent().filter(|p| !p.as_os_str().is_empty());
        sync_dir(parent.unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// Makes the entries of `dir` (a new file, a new directory, a rename) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
