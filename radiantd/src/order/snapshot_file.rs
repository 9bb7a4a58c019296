//! Where an order's snapshots live on disk, and how one is streamed out of and into a file.
//!
//! Snapshots are files under `<data_dir>/snapshots/o<order>/`: the current one is named
//! `<term>-<index>.snap` after the last log id it covers; one being built or received has a
//! unique `.part` name until it is complete and fsynced, then it is renamed (and the
//! directory fsynced). Older `.snap` files are deleted once a newer one is current; `.part`
//! files left by a crash are deleted when the replica starts. A transfer that is reading a
//! file when it is deleted keeps reading it: Unix keeps an open file until it is closed.

use std::fs::File;
use std::io;
use std::io::Read;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use openraft::alias::LogIdOf;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::snapshot_format::TRAILER_BYTES;
use super::state_machine::OrderConfig;
use crate::identity::OrderId;
use crate::raft::snapshot_stream::ChunkStream;
use crate::raft::snapshot_stream::SnapshotAssembler;
use crate::raft::snapshot_stream::StreamedSnapshot;

/// An order's snapshot data as Raft passes it around: a handle on a complete file, never its
/// contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The file.
    pub path: PathBuf,
    /// Its length in bytes.
    pub len: u64,
    /// The crc32 in its trailer.
    pub crc32: u32,
}

/// The directory of one order's snapshots on this node.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    path: PathBuf,
}

const CURRENT_EXT: &str = "snap";
const PART_EXT: &str = "part";

/// Makes `.part` names unique within the process (the pid separates processes).
static NEXT_PART: AtomicU64 = AtomicU64::new(0);

fn fsync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

impl SnapshotDir {
    /// The snapshot directory of `order` in `data_dir` (not created yet).
    pub fn new(data_dir: &Path, order: OrderId) -> Self {
        Self { path: data_dir.join("snapshots").join(format!("o{order}")) }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory and deletes the `.part` files a crash left behind. Called when
    /// the replica starts, before anything can build or receive a snapshot.
    pub fn open(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.path)?;
        for entry in std::fs::read_dir(&self.path)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == PART_EXT) {
                tracing::info!("deleting the unfinished snapshot {}", path.display());
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// A fresh name for a file being built or received (`what` says which).
    pub fn part_path(&self, what: &str) -> PathBuf {
        let n = NEXT_PART.fetch_add(1, Ordering::Relaxed);
        self.path.join(format!("{what}-{}-{n}.{PART_EXT}", std::process::id()))
    }

    /// The name of the current snapshot that covers the log up to `last`.
    pub fn current_path(&self, last: Option<&LogIdOf<OrderConfig>>) -> PathBuf {
        let name = match last {
            Some(l) => format!("{}-{}.{CURRENT_EXT}", l.leader_id.term, l.index),
            None => format!("empty.{CURRENT_EXT}"),
        };
        self.path.join(name)
    }

    /// Renames a complete, fsynced file to the name of the snapshot covering `last`, durably.
    pub fn publish(&self, file: &Path, last: Option<&LogIdOf<OrderConfig>>) -> io::Result<PathBuf> {
        let to = self.current_path(last);
        if file != to {
            std::fs::rename(file, &to)?;
            fsync_dir(&self.path)?;
        }
        Ok(to)
    }

    /// Deletes every complete snapshot but `keep`.
    pub fn remove_others(&self, keep: &Path) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.path)? {
            let path = entry?.path();
            if path != keep && path.extension().is_some_and(|e| e == CURRENT_EXT) {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// Deletes the directory and everything in it (the replica was retired).
    pub fn remove_all(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Reads the crc32 from the trailer of a complete snapshot file of `len` bytes.
pub fn trailer_crc(file: &File, len: u64) -> io::Result<u32> {
    if len < TRAILER_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a snapshot file of {len} bytes")));
    }
    let mut crc = [0u8; 4];
    file.read_exact_at(&mut crc, len - 4)?;
    Ok(u32::from_le_bytes(crc))
}

impl StreamedSnapshot for SnapshotFile {
    type Spool = SnapshotDir;
    type Assembler = FileAssembler;

    fn byte_len(&self) -> u64 {
        self.len
    }

    /// Reads the file on a blocking thread a few chunks ahead of the sender, so that reading
    /// and sending overlap.
    async fn into_chunk_stream(self, chunk_bytes: usize) -> io::Result<ChunkStream> {
        let chunk_bytes = chunk_bytes.max(1);
        let (tx, rx) = mpsc::channel(4);
        let file = {
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || File::open(path)).await.map_err(io::Error::other)??
        };
        let found = file.metadata()?.len();
        if found != self.len {
            return Err(io::Error::other(format!(
                "snapshot {} has {found} bytes, expected {}",
                self.path.display(),
                self.len
            )));
        }
        let len = self.len;
        tokio::task::spawn_blocking(move || {
            let mut input = file.take(len);
            loop {
                let mut buf = Vec::with_capacity(chunk_bytes);
                let n = match (&mut input).take(chunk_bytes as u64).read_to_end(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                if n == 0 || tx.blocking_send(Ok(buf)).is_err() {
                    return;
                }
            }
        });
        Ok(ReceiverStream::new(rx).boxed())
    }

    async fn assembler(spool: &SnapshotDir, len: u64) -> io::Result<FileAssembler> {
        let path = spool.part_path("recv");
        let file = {
            let path = path.clone();
            // Readable too: `finish` reads the trailer back.
            let open = move || std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path);
            tokio::task::spawn_blocking(open).await.map_err(io::Error::other)??
        };
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
        let writer = tokio::task::spawn_blocking(move || {
            let mut file = file;
            while let Some(chunk) = rx.blocking_recv() {
                file.write_all(&chunk)?;
            }
            file.sync_all()?;
            Ok(file)
        });
        Ok(FileAssembler { path, len, tx: Some(tx), writer: Some(writer), finished: false })
    }

    fn leftover(&self) -> Option<PathBuf> {
        Some(self.path.clone())
    }
}

/// Receives a snapshot into a `.part` file in the order's snapshot directory, written on a
/// blocking thread while the next chunks arrive. Dropped unfinished, it deletes the file.
pub struct FileAssembler {
    path: PathBuf,
    len: u64,
    tx: Option<mpsc::Sender<Vec<u8>>>,
    writer: Option<tokio::task::JoinHandle<io::Result<File>>>,
    finished: bool,
}

impl FileAssembler {
    /// Waits for the writer thread and returns its file, or why it stopped.
    async fn join(&mut self) -> io::Result<File> {
        self.tx = None;
        match self.writer.take() {
            Some(w) => w.await.map_err(io::Error::other)?,
            None => Err(io::Error::other("snapshot writer already stopped")),
        }
    }
}

impl SnapshotAssembler for FileAssembler {
    type Output = SnapshotFile;

    async fn write(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer stopped: its error says why.
        self.join().await?;
        Err(io::Error::other("snapshot writer stopped"))
    }

    async fn finish(mut self) -> io::Result<SnapshotFile> {
        let file = self.join().await?;
        let crc32 = trailer_crc(&file, self.len)?;
        self.finished = true;
        Ok(SnapshotFile { path: self.path.clone(), len: self.len, crc32 })
    }
}

impl Drop for FileAssembler {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::raft::snapshot_stream::Incoming;
    use crate::raft::snapshot_stream::assemble;

    fn files(dir: &SnapshotDir) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        names
    }

    /// What a sender would send for `file`: its chunks, then the trailer.
    async fn messages(file: SnapshotFile, chunk: usize) -> Vec<Incoming> {
        let bytes = std::fs::read(&file.path).unwrap();
        let mut out: Vec<Incoming> =
            file.into_chunk_stream(chunk).await.unwrap().map(|c| Incoming::Data(c.unwrap())).collect().await;
        out.push(Incoming::End { len: bytes.len() as u64, crc32: crc32fast::hash(&bytes) });
        out
    }

    /// A file goes out in chunks and comes back, on the receiving side, as a `.part` file with
    /// the same bytes and the crc32 of its trailer; a damaged stream leaves no file behind.
    #[tokio::test]
    async fn a_file_goes_through_in_chunks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::new(tmp.path(), 3);
        dir.open().unwrap();
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let path = dir.path().join("1-5.snap");
        std::fs::write(&path, &bytes).unwrap();
        let crc32 = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
        let sent = SnapshotFile { path, len: bytes.len() as u64, crc32 };

        let msgs = messages(sent.clone(), 30_000).await;
        assert_eq!(msgs.len(), 5, "four chunks and the trailer");
        let stream = futures::stream::iter(msgs.into_iter().map(Ok));
        let got: SnapshotFile = assemble(&dir, sent.len, stream).await.unwrap();
        assert_eq!(std::fs::read(&got.path).unwrap(), bytes);
        assert_eq!((got.len, got.crc32), (sent.len, sent.crc32));
        assert_eq!(got.path.extension().unwrap(), "part");
        std::fs::remove_file(&got.path).unwrap();

        let mut msgs = messages(sent.clone(), 30_000).await;
        if let Incoming::Data(c) = &mut msgs[2] {
            c[10] ^= 1;
        }
        let stream = futures::stream::iter(msgs.into_iter().map(Ok));
        assert!(assemble::<SnapshotFile, _>(&dir, sent.len, stream).await.is_err());
        assert_eq!(files(&dir), ["1-5.snap"], "the partial file is deleted");

        // A file that is not the length its handle says is not sent.
        let short = SnapshotFile { len: sent.len + 1, ..sent };
        assert!(short.into_chunk_stream(1024).await.is_err());
    }
}
