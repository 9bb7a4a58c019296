//! The Raft log of one group as append-only segment files: the write-ahead log.
//!
//! A redb commit of one small entry rewrote a dozen B-tree pages scattered over the file and
//! fsynced them (0.4-0.8 ms here); appending a record to a file and fdatasyncing it costs what
//! the disk costs for a few hundred sequential bytes (about 0.2 ms), and the write itself is
//! a copy into the page cache, cheap enough to do on the Raft task. The state machines stay in
//! redb.
//!
//! Layout: `DIR/SEQ.wal` files, `SEQ` a 16-digit hex counter. Each is preallocated, so an
//! fdatasync need not update the file size, starts with [`SEGMENT_MAGIC`] and the format
//! version, and holds records `[len u32][crc32 u32][body]`,
//! the body a postcard [`Record`]; a zero length ends the data. A new segment starts with a
//! checkpoint (the vote, the commit record, the purge record and the last index), so an older
//! segment whose entries are all purged or truncated away can be deleted.
//!
//! Recovery reads every segment in order. A record cut short or failing its checksum at the
//! end of the last segment is a write the crash interrupted, never reported durable: the log
//! ends before it. Anywhere else it is corruption, and opening fails. So does a log with a
//! hole (an index missing between the purge point and the last entry): Raft must never run on
//! one.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;

use redb::StorageBackend;
use serde::Deserialize;
use serde::Serialize;

use super::codec;

/// Opens (creating if needed) a file for the log.
pub type Opener = Arc<dyn Fn(&Path) -> io::Result<Arc<dyn StorageBackend>> + Send + Sync>;

/// A segment is preallocated to this size; one is closed once a write would pass it.
pub const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;

const HEADER: usize = 8;

/// The first bytes of every segment: the magic, then the format version (u16, little endian).
const SEGMENT_MAGIC: &[u8; 6] = b"RADWAL";
/// The format version of segments; a reader refuses a version it does not know.
const SEGMENT_VERSION: u16 = 1;
/// Where a segment's first record starts.
const SEGMENT_START: u64 = 8;

fn segment_header() -> [u8; SEGMENT_START as usize] {
    let mut h = [0u8; SEGMENT_START as usize];
    h[..6].copy_from_slice(SEGMENT_MAGIC);
    h[6..].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h
}

#[derive(Serialize, Deserialize)]
enum Record {
    Entry {
        index: u64,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    Vote(#[serde(with = "serde_bytes")] Vec<u8>),
    Committed(#[serde(with = "serde_bytes")] Vec<u8>),
    Purged {
        upto: u64,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Entries from `from` on are gone.
    Truncate {
        from: u64,
    },
    /// A checkpoint's bound: entries after `last` (all, for `None`) are gone.
    Last {
        last: Option<u64>,
    },
}

/// Where an entry's encoded bytes lie.
#[derive(Clone, Copy, Debug)]
struct Loc {
    seg: u64,
    off: u64,
    len: u32,
}

struct Segment {
    file: Arc<dyn StorageBackend>,
    /// Entries of the log that still live in this segment.
    live: usize,
    /// The file's length (preallocated, or longer if one record was larger).
    file_len: u64,
}

#[derive(Default)]
struct State {
    segments: BTreeMap<u64, Segment>,
    active: u64,
    /// Bytes written to the active segment.
    active_len: u64,
    /// Segments written since their last fsync.
    unsynced: BTreeSet<u64>,
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    purged: Option<(u64, Vec<u8>)>,
    entries: BTreeMap<u64, Loc>,
}

/// The write-ahead log of one Raft group.
pub struct Wal {
    dir: PathBuf,
    opener: Opener,
    segment_bytes: u64,
    state: Mutex<State>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("dir", &self.dir).finish()
    }
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

fn corrupt(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Makes the directory's entries (a created or deleted segment) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Appends the framed encoding of `rec` to `buf`; returns the offset of an entry's bytes in
/// `buf` and their length.
fn frame(buf: &mut Vec<u8>, rec: &Record) -> io::Result<Option<(usize, u32)>> {
    let body = codec::encode(rec)?;
    let len = u32::try_from(body.len()).map_err(|_| corrupt(format!("a log record of {} bytes", body.len())))?;
    let start = buf.len();
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    buf.extend_from_slice(&body);
    Ok(match rec {
        // postcard puts the byte string last: the entry's bytes are the body's tail.
        Record::Entry { bytes, .. } => Some((start + HEADER + body.len() - bytes.len(), bytes.len() as u32)),
        _ => None,
    })
}

impl State {
    /// Applies a record; returns the locations of the entries it removed or replaced.
    fn apply(&mut self, rec: Record, loc: Option<Loc>) -> Vec<Loc> {
        match rec {
            Record::Entry { index, .. } => loc.and_then(|loc| self.entries.insert(index, loc)).into_iter().collect(),
            Record::Vote(v) => {
                self.vote = Some(v);
                Vec::new()
            }
            Record::Committed(c) => {
                self.committed = Some(c);
                Vec::new()
            }
            Record::Purged { upto, bytes } => {
                let kept = self.entries.split_off(&upto.saturating_add(1));
                self.purged = Some((upto, bytes));
                std::mem::replace(&mut self.entries, kept).into_values().collect()
            }
            Record::Truncate { from } => self.entries.split_off(&from).into_values().collect(),
            Record::Last { last: Some(last) } => {
                self.entries.split_off(&last.saturating_add(1)).into_values().collect()
            }
            Record::Last { last: None } => std::mem::take(&mut self.entries).into_values().collect(),
        }
    }

    fn recount(&mut self) {
        for seg in self.segments.values_mut() {
            seg.live = 0;
        }
        for loc in self.entries.values() {
            if let Some(seg) = self.segments.get_mut(&loc.seg) {
                seg.live += 1;
            }
        }
    }

    fn checkpoint(&self) -> Vec<Record> {
        let mut out = Vec::new();
        if let Some(v) = &self.vote {
            out.push(Record::Vote(v.clone()));
        }
        if let Some(c) = &self.committed {
            out.push(Record::Committed(c.clone()));
        }
        if let Some((upto, bytes)) = &self.purged {
            out.push(Record::Purged { upto: *upto, bytes: bytes.clone() });
        }
        out.push(Record::Last { last: self.entries.keys().next_back().copied() });
        out
    }
}

impl Wal {
    /// Opens the log in `dir`, replaying its segments; creates it if there is none.
    pub fn open(dir: &Path, opener: Opener) -> io::Result<Wal> {
        Self::open_sized(dir, opener, SEGMENT_BYTES)
    }

    /// [`Wal::open`] with segments of `segment_bytes` (tests use small ones).
    pub(crate) fn open_sized(dir: &Path, opener: Opener, segment_bytes: u64) -> io::Result<Wal> {
        std::fs::create_dir_all(dir)?;
        let mut seqs = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name.strip_suffix(".wal").and_then(|s| u64::from_str_radix(s, 16).ok()) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let wal = Wal { dir: dir.to_path_buf(), opener, segment_bytes, state: Mutex::new(State::default()) };
        {
            let mut st = wal.lock();
            for (i, &seq) in seqs.iter().enumerate() {
                let last = i + 1 == seqs.len();
                wal.replay(&mut st, seq, last)?;
            }
            if seqs.is_empty() {
                wal.create_segment(&mut st, 1)?;
            }
            st.recount();
            check_contiguous(&st, dir)?;
        }
        Ok(wal)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn replay(&self, st: &mut State, seq: u64, last: bool) -> io::Result<()> {
        let path = seg_path(&self.dir, seq);
        let file = (self.opener)(&path)?;
        let file_len = file.len()?;
        // Record by record, never the whole (preallocated, mostly empty) segment at once.
        let mut start = [0u8; SEGMENT_START as usize];
        file.read(0, &mut start)?;
        if start == [0u8; SEGMENT_START as usize] && last {
            // Created, but the crash came before its header was synced: nothing was in it.
            file.write(0, &segment_header())?;
            file.sync_data()?;
        } else if start != segment_header() {
            return Err(corrupt(format!(
                "{} is not a Radiant log segment of format version {SEGMENT_VERSION} (it starts with {start:02x?})",
                path.display()
            )));
        }
        let mut pos = SEGMENT_START;
        let mut header = [0u8; HEADER];
        let end = loop {
            if pos + HEADER as u64 > file_len {
                break pos;
            }
            file.read(pos, &mut header)?;
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if len == 0 && crc == 0 {
                break pos;
            }
            let rec = if pos + HEADER as u64 + len <= file_len {
                let mut body = vec![0u8; len as usize];
                file.read(pos + HEADER as u64, &mut body)?;
                (crc32fast::hash(&body) == crc).then(|| codec::decode::<Record>(&body).ok()).flatten()
            } else {
                None
            };
            let Some(rec) = rec else {
                if !last {
                    return Err(corrupt(format!("log segment {} is corrupt at byte {pos}", path.display())));
                }
                tracing::warn!(segment = %path.display(), at = pos, "log ends in a record a crash cut short; dropping it");
                break pos;
            };
            let loc = match &rec {
                Record::Entry { bytes, .. } => {
                    Some(Loc { seg: seq, off: pos + HEADER as u64 + len - bytes.len() as u64, len: bytes.len() as u32 })
                }
                _ => None,
            };
            st.apply(rec, loc);
            pos += HEADER as u64 + len;
        };
        if last && has_data(&*file, end, file_len)? {
            // What follows the log's end was never reported durable: clear it, so a later
            // record is never read together with its remains.
            file.set_len(end)?;
            file.set_len(file_len.max(self.segment_bytes))?;
            file.sync_data()?;
        }
        st.segments.insert(seq, Segment { file, live: 0, file_len: file_len.max(self.segment_bytes) });
        st.active = seq;
        st.active_len = end;
        Ok(())
    }

    fn create_segment(&self, st: &mut State, seq: u64) -> io::Result<()> {
        let file = (self.opener)(&seg_path(&self.dir, seq))?;
        file.set_len(self.segment_bytes)?;
        file.write(0, &segment_header())?;
        file.sync_data()?;
        sync_dir(&self.dir)?;
        st.segments.insert(seq, Segment { file, live: 0, file_len: self.segment_bytes });
        st.active = seq;
        st.active_len = SEGMENT_START;
        Ok(())
    }

    /// Writes `records` at the end of the log (not synced); entries become readable at once.
    fn write(&self, st: &mut State, records: Vec<Record>) -> io::Result<()> {
        self.write_in(st, records, true)
    }

    /// [`Wal::write`]; `may_rotate` false writes into the active segment even past its size
    /// (a fresh segment's checkpoint, or one write larger than a segment).
    fn write_in(&self, st: &mut State, records: Vec<Record>, may_rotate: bool) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut spots = Vec::new();
        for rec in &records {
            spots.push(frame(&mut buf, rec)?);
        }
        if may_rotate && st.active_len > SEGMENT_START && st.active_len + buf.len() as u64 > self.segment_bytes {
            self.rotate(st)?;
            // The checkpoint went first; write the records after it.
            return self.write_in(st, records, false);
        }
        let seq = st.active;
        let at = st.active_len;
        let seg = st.segments.get_mut(&seq).ok_or_else(|| corrupt(format!("active log segment {seq} missing")))?;
        let needed = at + buf.len() as u64;
        if needed > seg.file_len {
            seg.file.set_len(needed)?;
            seg.file_len = needed;
        }
        seg.file.write(at, &buf)?;
        st.active_len = needed;
        st.unsynced.insert(seq);
        for (rec, spot) in records.into_iter().zip(spots) {
            let loc = spot.map(|(off, len)| Loc { seg: seq, off: at + off as u64, len });
            if loc.is_some()
                && let Some(s) = st.segments.get_mut(&seq)
            {
                s.live += 1;
            }
            for gone in st.apply(rec, loc) {
                if let Some(s) = st.segments.get_mut(&gone.seg) {
                    s.live = s.live.saturating_sub(1);
                }
            }
        }
        Ok(())
    }

    /// Closes the active segment (synced, so a torn record can only ever be in the last one)
    /// and opens the next, starting with a checkpoint.
    fn rotate(&self, st: &mut State) -> io::Result<()> {
        let old = st.active;
        if let Some(seg) = st.segments.get(&old) {
            seg.file.sync_data()?;
        }
        st.unsynced.remove(&old);
        self.create_segment(st, old + 1)?;
        let checkpoint = st.checkpoint();
        self.write_in(st, checkpoint, false)
    }

    /// Appends entries (index and encoded entry), not yet synced.
    pub fn append(&self, entries: Vec<(u64, Vec<u8>)>) -> io::Result<()> {
        let records = entries.into_iter().map(|(index, bytes)| Record::Entry { index, bytes }).collect();
        self.write(&mut self.lock(), records)
    }

    /// Records the vote, not yet synced.
    pub fn set_vote(&self, vote: Vec<u8>) -> io::Result<()> {
        self.write(&mut self.lock(), vec![Record::Vote(vote)])
    }

    /// Records the committed log id, not yet synced.
    pub fn set_committed(&self, committed: Vec<u8>) -> io::Result<()> {
        self.write(&mut self.lock(), vec![Record::Committed(committed)])
    }

    /// Removes the entries from `from` on, not yet synced.
    pub fn truncate(&self, from: u64) -> io::Result<()> {
        self.write(&mut self.lock(), vec![Record::Truncate { from }])
    }

    /// Removes the entries up to `upto` and records the purged log id, not yet synced.
    pub fn purge(&self, upto: u64, log_id: Vec<u8>) -> io::Result<()> {
        self.write(&mut self.lock(), vec![Record::Purged { upto, bytes: log_id }])
    }

    /// Makes everything written so far durable, then deletes the segments nothing lives in.
    pub fn sync(&self) -> io::Result<()> {
        let (files, dead) = {
            let mut st = self.lock();
            let files: Vec<_> = std::mem::take(&mut st.unsynced)
                .into_iter()
                .filter_map(|s| st.segments.get(&s).map(|seg| seg.file.clone()))
                .collect();
            // Dead now means the records that emptied them are in this sync.
            let dead: Vec<u64> =
                st.segments.iter().filter(|(s, seg)| **s < st.active && seg.live == 0).map(|(s, _)| *s).collect();
            (files, dead)
        };
        for f in &files {
            f.sync_data()?;
        }
        if !dead.is_empty() {
            let mut st = self.lock();
            for seq in &dead {
                st.segments.remove(seq);
            }
            drop(st);
            for seq in &dead {
                std::fs::remove_file(seg_path(&self.dir, *seq))?;
            }
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Whether something was written since the last sync.
    pub fn dirty(&self) -> bool {
        !self.lock().unsynced.is_empty()
    }

    /// The encoded entries with indexes in `start..=end` that the log holds, in order.
    pub fn read(&self, start: u64, end: u64) -> io::Result<Vec<Vec<u8>>> {
        let spots: Vec<(Loc, Arc<dyn StorageBackend>)> = {
            let st = self.lock();
            st.entries
                .range(start..=end)
                .filter_map(|(_, loc)| st.segments.get(&loc.seg).map(|s| (*loc, s.file.clone())))
                .collect()
        };
        spots
            .into_iter()
            .map(|(loc, file)| {
                let mut out = vec![0u8; loc.len as usize];
                file.read(loc.off, &mut out)?;
                Ok(out)
            })
            .collect()
    }

    /// The last entry's index, if the log holds one.
    pub fn last_index(&self) -> Option<u64> {
        self.lock().entries.keys().next_back().copied()
    }

    /// The saved vote.
    pub fn vote(&self) -> Option<Vec<u8>> {
        self.lock().vote.clone()
    }

    /// The saved committed log id.
    pub fn committed(&self) -> Option<Vec<u8>> {
        self.lock().committed.clone()
    }

    /// The last purged log id.
    pub fn purged(&self) -> Option<Vec<u8>> {
        self.lock().purged.as_ref().map(|(_, b)| b.clone())
    }

    /// How many segment files the log has (for tests).
    pub fn segments(&self) -> usize {
        self.lock().segments.len()
    }
}

/// Whether any byte of `file` in `from..to` is not zero; read a MiB at a time.
fn has_data(file: &dyn StorageBackend, from: u64, to: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(buf.len() as u64) as usize;
        file.read(at, &mut buf[..n])?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(true);
        }
        at += n as u64;
    }
    Ok(false)
}

/// Refuses a log with a hole: entries must run without a gap, starting right after the
/// purged index when there is one.
fn check_contiguous(st: &State, dir: &Path) -> io::Result<()> {
    let mut expected = st.purged.as_ref().map(|(upto, _)| upto + 1);
    for &index in st.entries.keys() {
        if let Some(e) = expected
            && index != e
        {
            return Err(corrupt(format!(
                "the Raft log in {} has a hole: index {e} is missing before {index}",
                dir.display()
            )));
        }
        expected = Some(index + 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Opener {
        Arc::new(|p: &Path| Ok(Arc::new(crate::disk::PlainFile::open(p)?) as Arc<dyn StorageBackend>))
    }

    fn entry(i: u64, fill: u8, len: usize) -> (u64, Vec<u8>) {
        (i, vec![fill; len])
    }

    fn indexes(w: &Wal) -> Vec<u64> {
        w.lock().entries.keys().copied().collect()
    }

    #[test]
    fn everything_written_and_synced_is_there_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wal::open(dir.path(), plain()).unwrap();
        w.set_vote(b"v1".to_vec()).unwrap();
        w.append((1..=5).map(|i| entry(i, i as u8, 10)).collect()).unwrap();
        w.set_committed(b"c3".to_vec()).unwrap();
        w.truncate(5).unwrap();
        w.append(vec![entry(5, 50, 3)]).unwrap();
        w.purge(1, b"p1".to_vec()).unwrap();
        w.sync().unwrap();
        drop(w);
        let w = Wal::open(dir.path(), plain()).unwrap();
        assert_eq!(indexes(&w), [2, 3, 4, 5]);
        assert_eq!(w.read(2, 5).unwrap(), [vec![2; 10], vec![3; 10], vec![4; 10], vec![50; 3]]);
        assert_eq!(
            (w.vote(), w.committed(), w.purged()),
            (Some(b"v1".to_vec()), Some(b"c3".to_vec()), Some(b"p1".to_vec()))
        );
    }

    /// A crash in the middle of a write leaves a record cut short at the end of the log: it
    /// was never reported durable, and the log ends before it.
    #[test]
    fn a_record_cut_short_at_the_end_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wal::open(dir.path(), plain()).unwrap();
        w.append((1..=3).map(|i| entry(i, 7, 100)).collect()).unwrap();
        w.sync().unwrap();
        let end = w.lock().active_len;
        drop(w);
        let f = crate::disk::PlainFile::open(&seg_path(dir.path(), 1)).unwrap();
        f.write(end, &[60, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
        let w = Wal::open(dir.path(), plain()).unwrap();
        assert_eq!(indexes(&w), [1, 2, 3]);
        w.append(vec![entry(4, 8, 5)]).unwrap();
        w.sync().unwrap();
        drop(w);
        let w = Wal::open(dir.path(), plain()).unwrap();
        assert_eq!(indexes(&w), [1, 2, 3, 4]);
        assert_eq!(w.read(4, 4).unwrap(), [vec![8; 5]]);
    }

    /// Bytes a crash left after the log's end (past a zero header) are cleared at open: a
    /// later segment would otherwise close with them after its records, as corruption.
    #[test]
    fn leftovers_after_the_end_are_cleared_before_the_segment_fills() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wal::open_sized(dir.path(), plain(), 4096).unwrap();
        w.append(vec![entry(1, 1, 100)]).unwrap();
        w.sync().unwrap();
        let end = w.lock().active_len;
        drop(w);
        // Where the segment's records will end, six records on, when the seventh no longer fits:
        // leftovers there would be read as a record after them.
        let mut one = Vec::new();
        frame(&mut one, &Record::Entry { index: 2, bytes: vec![2; 600] }).unwrap();
        let f = crate::disk::PlainFile::open(&seg_path(dir.path(), 1)).unwrap();
        f.write(end + 6 * one.len() as u64, &[7; 64]).unwrap();
        let w = Wal::open_sized(dir.path(), plain(), 4096).unwrap();
        for i in 2..=12 {
            w.append(vec![entry(i, i as u8, 600)]).unwrap();
        }
        w.sync().unwrap();
        assert!(w.segments() > 1);
        drop(w);
        let w = Wal::open_sized(dir.path(), plain(), 4096).unwrap();
        assert_eq!(indexes(&w), (1..=12).collect::<Vec<_>>());
    }

    #[test]
    fn corruption_before_the_last_segment_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wal::open_sized(dir.path(), plain(), 4096).unwrap();
        w.append((1..=3).map(|i| entry(i, 1, 1000)).collect()).unwrap();
        w.append((4..=20).map(|i| entry(i, 1, 1000)).collect()).unwrap();
        w.sync().unwrap();
        assert!(w.segments() > 1);
        drop(w);
        let f = crate::disk::PlainFile::open(&seg_path(dir.path(), 1)).unwrap();
        f.write(20, &[0xff; 4]).unwrap();
        let err = Wal::open_sized(dir.path(), plain(), 4096).unwrap_err();
        assert!(err.to_string().contains("is corrupt at byte"), "{err}");
    }

    #[test]
    fn a_segment_of_another_format_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wal::open(dir.path(), plain()).unwrap();
        w.append(vec![entry(1, 1, 1)]).unwrap();
        w.sync().unwrap();
        drop(w);
        let f = crate::disk::PlainFile::open(&seg_path(dir.path(), 1)).unwrap();
        f.write(6, &9u16.to_le_bytes()).unwrap();
        let err = Wal::open(dir.path(), plain()).unwrap_err();
        assert!(err.to_string().contains("not a Radiant log segment of format version 1"), "{err}");
    }

    #[test]
    fn a_log_with_a_hole_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wal::open(dir.path(), plain()).unwrap();
        w.append(vec![entry(1, 1, 1), entry(2, 1, 1), entry(4, 1, 1)]).unwrap();
        w.sync().unwrap();
        drop(w);
        let err = Wal::open(dir.path(), plain()).unwrap_err();
        assert!(err.to_string().contains("index 3 is missing before 4"), "{err}");
    }

    /// Segments whose entries are all purged are deleted, and what the deleted ones recorded
    /// (votes, a truncation) still holds after a reopen, through the checkpoints.
    #[test]
    fn emptied_segments_are_deleted_and_their_records_survive() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wal::open_sized(dir.path(), plain(), 8192).unwrap();
        w.set_vote(b"v".to_vec()).unwrap();
        for i in 1..=40 {
            w.append(vec![entry(i, i as u8, 1000)]).unwrap();
        }
        // Entries 31..=40 are replaced after a truncation.
        w.truncate(31).unwrap();
        for i in 31..=35 {
            w.append(vec![entry(i, 100 + i as u8, 500)]).unwrap();
        }
        w.sync().unwrap();
        let before = w.segments();
        w.purge(30, b"p30".to_vec()).unwrap();
        w.sync().unwrap();
        assert!(w.segments() < before, "{} segments, {before} before the purge", w.segments());
        drop(w);
        let w = Wal::open_sized(dir.path(), plain(), 8192).unwrap();
        assert_eq!(indexes(&w), (31..=35).collect::<Vec<_>>());
        assert_eq!(w.read(31, 31).unwrap(), [vec![131; 500]]);
        assert_eq!((w.vote(), w.purged()), (Some(b"v".to_vec()), Some(b"p30".to_vec())));
    }
}
