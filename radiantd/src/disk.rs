//! Opening the node's one redb file. A normal build hands it to redb's own file backend. A
//! `failpoints` build puts a model of the disk's volatile cache between redb and the file, so
//! the fault suite can inject below the storage engine what a real disk does:
//!
//! - `disk-sync`, a failpoint in every fsync: `return` fails it with EIO, `sleep(MS)` stalls it.
//! - With `RADIANT_VOLATILE_DISK=1` in the node's environment, writes stay in memory until the
//!   next fsync, so a `kill -9` loses every write not yet synced, as a power cut loses the
//!   page cache. Without it writes go to the file at once, as with redb's own backend.
//!
//! The model is what makes "acknowledged only after fsync" testable: an acknowledged write
//! that sat only in the page cache survives a kill -9 on a real disk (the kernel still holds
//! it), and vanishes here.

use std::path::Path;

use redb::Database;
use redb::DatabaseError;

/// Opens or creates the database at `path`.
pub fn open(path: &Path) -> Result<Database, DatabaseError> {
    #[cfg(feature = "failpoints")]
    {
        let volatile = std::env::var_os("RADIANT_VOLATILE_DISK").is_some_and(|v| v == "1");
        let backend = model::ModelDisk::open(path, volatile)?;
        if volatile {
            tracing::warn!(path = %path.display(), "volatile disk model: writes not yet synced are lost when the process dies");
        }
        redb::Builder::new().create_with_backend(backend)
    }
    #[cfg(not(feature = "failpoints"))]
    {
        Database::create(path)
    }
}

/// Opens or creates a file of the Raft log ([`crate::raft::wal`]) on the same disk model as
/// the database: in a `failpoints` build its fsyncs take the `disk-sync` failpoint and, with
/// `RADIANT_VOLATILE_DISK=1`, its unsynced writes die with the process.
pub fn open_file(path: &Path) -> std::io::Result<std::sync::Arc<dyn redb::StorageBackend>> {
    #[cfg(feature = "failpoints")]
    {
        let volatile = std::env::var_os("RADIANT_VOLATILE_DISK").is_some_and(|v| v == "1");
        let disk = model::ModelDisk::open(path, volatile).map_err(std::io::Error::other)?;
        Ok(std::sync::Arc::new(disk))
    }
    #[cfg(not(feature = "failpoints"))]
    {
        Ok(std::sync::Arc::new(PlainFile::open(path)?))
    }
}

/// A file as a [`redb::StorageBackend`], without redb's locking (the data dir is locked by
/// the database file already).
#[derive(Debug)]
pub struct PlainFile(std::fs::File);

impl PlainFile {
    /// Opens or creates `path` for reading and writing.
    pub fn open(path: &Path) -> std::io::Result<PlainFile> {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        Ok(PlainFile(file))
    }
}

impl redb::StorageBackend for PlainFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.0.metadata()?.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        std::os::unix::fs::FileExt::read_exact_at(&self.0, out, offset)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, data, offset)
    }
}

#[cfg(any(feature = "failpoints", test))]
pub(crate) mod model {
    use std::collections::BTreeMap;
    use std::fs::File;
    use std::io;
    use std::os::unix::fs::FileExt;
    use std::path::Path;
    use std::sync::Mutex;

    use redb::DatabaseError;
    use redb::StorageBackend;

    /// A file whose writes, if `volatile`, are held in memory until `sync_data`.
    #[derive(Debug)]
    pub struct ModelDisk {
        file: File,
        volatile: bool,
        /// Writes not yet synced, by offset; no two overlap (a later write replaces the bytes
        /// of earlier ones it covers).
        unsynced: Mutex<BTreeMap<u64, Vec<u8>>>,
    }

    impl ModelDisk {
        /// Opens or creates the file and locks it against a second process, which redb's own
        /// backend does and this one must do itself (it declines redb's range locks).
        pub fn open(path: &Path, volatile: bool) -> Result<ModelDisk, DatabaseError> {
            let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Err(DatabaseError::DatabaseAlreadyOpen),
                Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
            }
            Ok(ModelDisk { file, volatile, unsynced: Mutex::new(BTreeMap::new()) })
        }

        fn unsynced(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Vec<u8>>> {
            self.unsynced.lock().unwrap_or_else(|p| p.into_inner())
        }
    }

    /// Removes from `map` the bytes in `[start, end)`, keeping the parts of entries outside it.
    fn cut(map: &mut BTreeMap<u64, Vec<u8>>, start: u64, end: u64) {
        let overlapping: Vec<u64> = map
            .range(..end)
            .rev()
            .take_while(|(off, data)| **off + data.len() as u64 > start)
            .map(|(off, _)| *off)
            .collect();
        for off in overlapping {
            let Some(data) = map.remove(&off) else { continue };
            let data_end = off + data.len() as u64;
            if off < start {
                map.insert(off, data[..(start - off) as usize].to_vec());
            }
            if data_end > end {
                map.insert(end, data[(end - off) as usize..].to_vec());
            }
        }
    }

    impl StorageBackend for ModelDisk {
        fn len(&self) -> Result<u64, io::Error> {
            Ok(self.file.metadata()?.len())
        }

        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
            self.file.read_exact_at(out, offset)?;
            let end = offset + out.len() as u64;
            let unsynced = self.unsynced();
            for (off, data) in unsynced.range(..end).rev().take_while(|(off, data)| **off + data.len() as u64 > offset)
            {
                let from = (*off).max(offset);
                let to = (*off + data.len() as u64).min(end);
                out[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&data[(from - off) as usize..(to - off) as usize]);
            }
            Ok(())
        }

        fn set_len(&self, len: u64) -> Result<(), io::Error> {
            let mut unsynced = self.unsynced();
            cut(&mut unsynced, len, u64::MAX);
            self.file.set_len(len)
        }

        fn sync_data(&self) -> Result<(), io::Error> {
            fail::fail_point!("disk-sync", |_| Err(io::Error::from_raw_os_error(5)));
            let mut unsynced = self.unsynced();
            for (off, data) in unsynced.iter() {
                self.file.write_all_at(data, *off)?;
            }
            unsynced.clear();
            self.file.sync_data()
        }

        fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
            if !self.volatile {
                return self.file.write_all_at(data, offset);
            }
            let mut unsynced = self.unsynced();
            cut(&mut unsynced, offset, offset + data.len() as u64);
            unsynced.insert(offset, data.to_vec());
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use redb::ReadableDatabase;
        use redb::TableDefinition;

        use super::*;

        const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

        #[test]
        fn later_writes_replace_the_bytes_they_cover() {
            let mut m = BTreeMap::new();
            m.insert(0, vec![1; 8]);
            cut(&mut m, 2, 4);
            m.insert(2, vec![2; 2]);
            cut(&mut m, 6, 12);
            m.insert(6, vec![3; 6]);
            assert_eq!(
                m.into_iter().collect::<Vec<_>>(),
                [(0, vec![1, 1]), (2, vec![2, 2]), (4, vec![1, 1]), (6, vec![3; 6])]
            );
        }

        /// What a volatile disk keeps across a crash: durable commits, not the ones after.
        #[test]
        fn a_crash_loses_exactly_what_was_not_synced() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db.redb");
            let db = redb::Builder::new().create_with_backend(ModelDisk::open(&path, true).unwrap()).unwrap();
            assert!(matches!(ModelDisk::open(&path, true), Err(DatabaseError::DatabaseAlreadyOpen)));
            let write = |k: u64, durability: redb::Durability| {
                let mut txn = db.begin_write().unwrap();
                txn.set_durability(durability).unwrap();
                txn.open_table(T).unwrap().insert(k, b"v".as_slice()).unwrap();
                txn.commit().unwrap();
            };
            write(1, redb::Durability::Immediate);
            write(2, redb::Durability::None);
            // A crash: the process dies without syncing (redb is not told).
            std::mem::forget(db);
            let disk = ModelDisk::open(&path, true);
            assert!(disk.is_err(), "the dead process's lock goes with its file descriptor, not before");
            drop(disk);
            // The lock is the forgotten handle's: a new process would not see it. Read the file
            // as that process would.
            let copy = dir.path().join("after-crash.redb");
            std::fs::copy(&path, &copy).unwrap();
            let db = redb::Builder::new().create_with_backend(ModelDisk::open(&copy, true).unwrap()).unwrap();
            let txn = db.begin_read().unwrap();
            let t = txn.open_table(T).unwrap();
            assert!(t.get(1).unwrap().is_some(), "a durable commit survives");
            assert!(t.get(2).unwrap().is_none(), "a commit that was never synced is gone");
        }
    }
}
