//! The on-disk (and on-the-wire) format of an order snapshot: one file, written and read as a
//! stream, so that neither building, sending nor installing a snapshot ever holds a whole
//! order in memory.
//!
//! ```text
//! magic    8 bytes   "RADSNAP\n"
//! version  u32 LE    FORMAT_VERSION (3; versions 1 and 2 are still read)
//! header   u32 LE length, then postcard(SnapshotHeader): Raft meta, owned shards, released_at,
//!                    move state, modulus, owner epochs (version 1: no move state; versions 1
//!                    and 2: no owner epochs; what is missing reads as none)
//! records  0x01, shard u32 LE, key length u32 LE, value length u32 LE, key, value   (repeated)
//! end      0x00
//! trailer  records u64 LE, key and value bytes u64 LE, crc32 u32 LE
//! ```
//!
//! Records come grouped by their shard field: first the rows of each shard table, then the
//! dirty tables of the shards the order tracks for a move (version 2 only). A dirty record's
//! shard field is [`DIRTY_TAG`]` | shard` and its value the log index of the key's last write,
//! u64 LE: the tables go with the snapshot because a replica that installs it may be the one
//! a destination pulls the next delta from. Shard numbers never have that bit set.
//!
//! The crc32 covers every byte before it. A reader refuses a file whose magic, version,
//! counts or checksum do not match, or that has bytes after the trailer; but since the
//! checksum is only known at the end, a reader hands records out before it can vouch for
//! them, and its caller must discard what it did with them unless [`SnapshotReader::next`]
//! reached the end cleanly (install does this by aborting its redb transaction).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io;
use std::io::Read;
use std::io::Write;

use openraft::alias::SnapshotMetaOf;
use serde::Deserialize;
use serde::Serialize;

use super::shard_move::MoveState;
use super::state_machine::OrderConfig;
use crate::raft::codec;

/// Identifies a Radiant order snapshot file.
pub const MAGIC: &[u8; 8] = b"RADSNAP\n";

/// The version this code writes. It reads this one, version 2 (no owner epochs) and version
/// 1 (no move state, no dirty tables), so a snapshot a node of an earlier release built still
/// installs.
pub const FORMAT_VERSION: u32 = 3;

/// The oldest version this code reads.
const OLDEST_VERSION: u32 = 1;

/// Set in a record's shard field when the record is a dirty-table entry of that shard, not a
/// row: one bit keeps the record layout of version 1 while telling the two apart.
pub const DIRTY_TAG: u32 = 1 << 31;

/// Bytes of the trailer after the end tag.
pub const TRAILER_BYTES: u64 = 8 + 8 + 4;

/// Largest header accepted: it holds a membership, two shard sets and the move state (a
/// cursor with one key per incoming shard), a few KiB at most.
const MAX_HEADER_BYTES: u32 = 16 * 1024 * 1024;

/// Largest key or value accepted. Far above the Kv limits; it only stops a damaged length
/// from making the reader wait for gigabytes before the checksum could refuse them.
const MAX_FIELD_BYTES: u32 = 256 * 1024 * 1024;

const TAG_RECORD: u8 = 1;
const TAG_END: u8 = 0;

/// What a snapshot holds besides its rows: the Raft meta and the order's applied shard state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// Last log id and membership the snapshot covers.
    pub meta: SnapshotMetaOf<OrderConfig>,
    /// The shards the order serves, as its log decided.
    pub owned: BTreeSet<u32>,
    /// The map epoch each shard was last released at.
    pub released_at: BTreeMap<u32, u64>,
    /// The shards the order tracks or receives in a move, as its log decided.
    pub moves: MoveState,
    /// The shard count the order's tables are cut by, once it resharded (see
    /// [`super::layout`]).
    pub modulus: Option<u32>,
    /// The map epoch each owned shard was acquired at (none for files before version 3).
    pub acquired_at: BTreeMap<u32, u64>,
}

/// The header of version 2 files, before owner epochs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotHeaderV2 {
    meta: SnapshotMetaOf<OrderConfig>,
    owned: BTreeSet<u32>,
    released_at: BTreeMap<u32, u64>,
    moves: MoveState,
    modulus: Option<u32>,
}

impl From<SnapshotHeaderV2> for SnapshotHeader {
    fn from(h: SnapshotHeaderV2) -> Self {
        Self {
            meta: h.meta,
            owned: h.owned,
            released_at: h.released_at,
            moves: h.moves,
            modulus: h.modulus,
            acquired_at: BTreeMap::new(),
        }
    }
}

/// The header of version 1 files, written before shard moves: postcard is not
/// self-describing, so the old shape is decoded as it was and the move state defaulted.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotHeaderV1 {
    meta: SnapshotMetaOf<OrderConfig>,
    owned: BTreeSet<u32>,
    released_at: BTreeMap<u32, u64>,
}

impl From<SnapshotHeaderV1> for SnapshotHeader {
    fn from(h: SnapshotHeaderV1) -> Self {
        Self {
            meta: h.meta,
            owned: h.owned,
            released_at: h.released_at,
            moves: MoveState::default(),
            modulus: None,
            acquired_at: BTreeMap::new(),
        }
    }
}

/// Which table a record belongs to, from its shard field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordTable {
    /// A row of the shard's table.
    Shard(u32),
    /// An entry of the shard's dirty table: the value is [`dirty_index`]'s input.
    Dirty(u32),
}

impl RecordTable {
    /// Reads a record's shard field.
    pub fn of(field: u32) -> Self {
        if field & DIRTY_TAG != 0 { Self::Dirty(field & !DIRTY_TAG) } else { Self::Shard(field) }
    }
}

/// The log index a dirty record's value holds.
pub fn dirty_index(value: &[u8]) -> Result<u64, FormatError> {
    let bytes: [u8; 8] =
        value.try_into().map_err(|_| FormatError::Damaged(format!("a dirty record value of {} bytes", value.len())))?;
    Ok(u64::from_le_bytes(bytes))
}

/// Counts written to (and checked from) the trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Records.
    pub records: u64,
    /// Key and value bytes of all records.
    pub payload_bytes: u64,
    /// The checksum in the trailer.
    pub crc32: u32,
    /// Length of the whole file.
    pub file_bytes: u64,
}

/// Why a snapshot file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Reading or writing failed.
    #[error("snapshot file I/O: {0}")]
    Io(#[from] io::Error),
    /// Not a snapshot file of this format.
    #[error("not a Radiant snapshot file (bad magic)")]
    BadMagic,
    /// Written by a version of Radiant this one cannot read.
    #[error("snapshot format version {0}; this build reads versions {OLDEST_VERSION} to {FORMAT_VERSION}")]
    Version(u32),
    /// The file is damaged or cut short.
    #[error("damaged snapshot file: {0}")]
    Damaged(String),
    /// The checksum does not match the content.
    #[error("snapshot checksum mismatch: trailer says {expected:08x}, content is {actual:08x}")]
    Checksum {
        /// Checksum in the trailer.
        expected: u32,
        /// Checksum of what was read.
        actual: u32,
    },
}

impl From<FormatError> for io::Error {
    fn from(e: FormatError) -> Self {
        match e {
            FormatError::Io(e) => e,
            e => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// A writer or reader that checksums and counts every byte that passes through it.
struct Crc<T> {
    inner: T,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<T> Crc<T> {
    fn new(inner: T) -> Self {
        Self { inner, hasher: crc32fast::Hasher::new(), bytes: 0 }
    }
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Writes a snapshot record by record. Give it a buffered writer.
pub struct SnapshotWriter<W: Write> {
    out: Crc<W>,
    records: u64,
    payload_bytes: u64,
}

impl<W: Write> SnapshotWriter<W> {
    /// Writes the magic, version and header.
    pub fn new(out: W, header: &SnapshotHeader) -> Result<Self, FormatError> {
        Self::start(out, FORMAT_VERSION, &codec::encode(header)?)
    }

    /// Writes a version 1 file (the header without its move state), as the previous release
    /// did: for tests that check it still reads.
    #[cfg(test)]
    pub(crate) fn new_v1(out: W, header: &SnapshotHeader) -> Result<Self, FormatError> {
        let v1 = SnapshotHeaderV1 {
            meta: header.meta.clone(),
            owned: header.owned.clone(),
            released_at: header.released_at.clone(),
        };
        Self::start(out, 1, &codec::encode(&v1)?)
    }

    fn start(out: W, version: u32, header: &[u8]) -> Result<Self, FormatError> {
        let mut out = Crc::new(out);
        let len = u32::try_from(header.len())
            .ok()
            .filter(|l| *l <= MAX_HEADER_BYTES)
            .ok_or_else(|| FormatError::Damaged(format!("header of {} bytes", header.len())))?;
        out.write_all(MAGIC)?;
        out.write_all(&version.to_le_bytes())?;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(header)?;
        Ok(Self { out, records: 0, payload_bytes: 0 })
    }

    /// Appends one row of a shard table.
    pub fn record(&mut self, shard: u32, key: &[u8], value: &[u8]) -> Result<(), FormatError> {
        if shard & DIRTY_TAG != 0 {
            return Err(FormatError::Damaged(format!("shard {shard} has the dirty tag bit set")));
        }
        self.write_record(shard, key, value)
    }

    /// Appends one entry of a shard's dirty table: the key and the log index of its last write.
    pub fn dirty_record(&mut self, shard: u32, key: &[u8], index: u64) -> Result<(), FormatError> {
        if shard & DIRTY_TAG != 0 {
            return Err(FormatError::Damaged(format!("shard {shard} has the dirty tag bit set")));
        }
        self.write_record(DIRTY_TAG | shard, key, &index.to_le_bytes())
    }

    fn write_record(&mut self, shard: u32, key: &[u8], value: &[u8]) -> Result<(), FormatError> {
        let field = |b: &[u8]| {
            u32::try_from(b.len())
                .ok()
                .filter(|l| *l <= MAX_FIELD_BYTES)
                .ok_or_else(|| FormatError::Damaged(format!("a key or value of {} bytes", b.len())))
        };
        let (klen, vlen) = (field(key)?, field(value)?);
        let mut head = [0u8; 13];
        head[0] = TAG_RECORD;
        head[1..5].copy_from_slice(&shard.to_le_bytes());
        head[5..9].copy_from_slice(&klen.to_le_bytes());
        head[9..13].copy_from_slice(&vlen.to_le_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(key)?;
        self.out.write_all(value)?;
        self.records += 1;
        self.payload_bytes += u64::from(klen) + u64::from(vlen);
        Ok(())
    }

    /// Writes the end tag and the trailer, flushes, and returns the writer it was given
    /// (for the caller to fsync) with the summary.
    pub fn finish(mut self) -> Result<(W, Summary), FormatError> {
        self.out.write_all(&[TAG_END])?;
        self.out.write_all(&self.records.to_le_bytes())?;
        self.out.write_all(&self.payload_bytes.to_le_bytes())?;
        let crc32 = self.out.hasher.clone().finalize();
        let file_bytes = self.out.bytes + 4;
        let mut inner = self.out.inner;
        inner.write_all(&crc32.to_le_bytes())?;
        inner.flush()?;
        Ok((inner, Summary { records: self.records, payload_bytes: self.payload_bytes, crc32, file_bytes }))
    }
}

/// One record as read: `(shard field, key, value)`, borrowed from the reader until the next.
pub type Record<'a> = (u32, &'a [u8], &'a [u8]);

/// Reads a snapshot record by record. Give it a buffered reader.
pub struct SnapshotReader<R: Read> {
    input: Crc<R>,
    header: SnapshotHeader,
    records: u64,
    payload_bytes: u64,
    key: Vec<u8>,
    value: Vec<u8>,
    summary: Option<Summary>,
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// A file cut short reads as damaged, not as a plain I/O error.
fn truncated(e: io::Error) -> FormatError {
    if e.kind() == io::ErrorKind::UnexpectedEof { FormatError::Damaged("cut short".into()) } else { FormatError::Io(e) }
}

/// Reads exactly `len` bytes into `buf`, growing it only as bytes arrive.
fn read_field(r: &mut impl Read, len: u32, buf: &mut Vec<u8>) -> Result<(), FormatError> {
    if len > MAX_FIELD_BYTES {
        return Err(FormatError::Damaged(format!("a key or value of {len} bytes")));
    }
    buf.clear();
    r.take(u64::from(len)).read_to_end(buf)?;
    if buf.len() != len as usize {
        return Err(FormatError::Damaged("cut short".into()));
    }
    Ok(())
}

impl<R: Read> SnapshotReader<R> {
    /// Reads and checks the magic, version and header.
    pub fn new(input: R) -> Result<Self, FormatError> {
        let mut input = Crc::new(input);
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic).map_err(truncated)?;
        if &magic != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let version = read_u32(&mut input).map_err(truncated)?;
        if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(FormatError::Version(version));
        }
        let len = read_u32(&mut input).map_err(truncated)?;
        if len > MAX_HEADER_BYTES {
            return Err(FormatError::Damaged(format!("header of {len} bytes")));
        }
        let mut header = Vec::new();
        read_field(&mut input, len, &mut header)?;
        let header = match version {
            1 => codec::decode::<SnapshotHeaderV1>(&header).map(SnapshotHeader::from),
            2 => codec::decode::<SnapshotHeaderV2>(&header).map(SnapshotHeader::from),
            _ => codec::decode(&header),
        }
        .map_err(|e| FormatError::Damaged(format!("header: {e}")))?;
        Ok(Self { input, header, records: 0, payload_bytes: 0, key: Vec::new(), value: Vec::new(), summary: None })
    }

    /// The header.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// The next record as `(shard field, key, value)` (see [`RecordTable::of`]), or `None` once the trailer has been read and
    /// the counts and checksum found right. An error leaves the reader unusable.
    #[allow(clippy::should_implement_trait)] // records borrow the reader's buffers: not an Iterator
    pub fn next(&mut self) -> Result<Option<Record<'_>>, FormatError> {
        if self.summary.is_some() {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.input.read_exact(&mut tag).map_err(truncated)?;
        match tag[0] {
            TAG_RECORD => {
                let mut head = [0u8; 12];
                self.input.read_exact(&mut head).map_err(truncated)?;
                let shard = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
                let klen = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
                let vlen = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
                read_field(&mut self.input, klen, &mut self.key)?;
                read_field(&mut self.input, vlen, &mut self.value)?;
                self.records += 1;
                self.payload_bytes += u64::from(klen) + u64::from(vlen);
                Ok(Some((shard, &self.key, &self.value)))
            }
            TAG_END => {
                let records = read_u64(&mut self.input).map_err(truncated)?;
                let payload_bytes = read_u64(&mut self.input).map_err(truncated)?;
                let actual = self.input.hasher.clone().finalize();
                let file_bytes = self.input.bytes + 4;
                let expected = read_u32(&mut self.input.inner).map_err(truncated)?;
                if expected != actual {
                    return Err(FormatError::Checksum { expected, actual });
                }
                if (records, payload_bytes) != (self.records, self.payload_bytes) {
                    return Err(FormatError::Damaged(format!(
                        "trailer counts {records} records of {payload_bytes} bytes, read {} of {}",
                        self.records, self.payload_bytes
                    )));
                }
                let mut extra = [0u8; 1];
                if self.input.inner.read(&mut extra)? != 0 {
                    return Err(FormatError::Damaged("bytes after the trailer".into()));
                }
                self.summary = Some(Summary { records, payload_bytes, crc32: expected, file_bytes });
                Ok(None)
            }
            t => Err(FormatError::Damaged(format!("unknown record tag {t}"))),
        }
    }

    /// The trailer, once [`SnapshotReader::next`] has returned `None`.
    pub fn summary(&self) -> Option<Summary> {
        self.summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::shard_move::Incoming;
    use crate::order::shard_move::MoveCursor;

    fn header() -> SnapshotHeader {
        let cursor = MoveCursor { after_key: Some(b"k".to_vec().into()), pass_index: 9, ..Default::default() };
        SnapshotHeader {
            meta: SnapshotMetaOf::<OrderConfig>::default(),
            owned: [1, 2, 5].into(),
            released_at: [(3, 7)].into(),
            moves: MoveState {
                tracking: [(2, 11)].into(),
                incoming: [(4, Incoming { move_id: 12, cursor, sealed: false })].into(),
            },
            modulus: Some(16),
            acquired_at: [(1, 4), (2, 4), (5, 6)].into(),
        }
    }

    fn write(rows: &[(u32, &[u8], &[u8])]) -> (Vec<u8>, Summary) {
        let mut w = SnapshotWriter::new(Vec::new(), &header()).unwrap();
        for (s, k, v) in rows {
            w.record(*s, k, v).unwrap();
        }
        w.finish().unwrap()
    }

    type ReadBack = (SnapshotHeader, Vec<(u32, Vec<u8>, Vec<u8>)>, Summary);

    fn read_all(bytes: &[u8]) -> Result<ReadBack, FormatError> {
        let mut r = SnapshotReader::new(bytes)?;
        let mut rows = Vec::new();
        while let Some((s, k, v)) = r.next()? {
            rows.push((s, k.to_vec(), v.to_vec()));
        }
        Ok((r.header().clone(), rows, r.summary().unwrap()))
    }

    #[test]
    fn rows_come_back_in_order_with_the_header_and_counts() {
        let big = vec![9u8; 300_000];
        let (bytes, summary) = write(&[(1, b"a", b"x"), (1, b"b", b""), (5, b"k", &big)]);
        assert_eq!(summary.file_bytes, bytes.len() as u64);
        assert_eq!(summary.records, 3);
        assert_eq!(summary.payload_bytes, 1 + 1 + 1 + 1 + big.len() as u64);
        let (h, rows, read) = read_all(&bytes).unwrap();
        assert_eq!(h, header());
        assert_eq!(read, summary);
        assert_eq!(rows[2], (5, b"k".to_vec(), big));
        assert_eq!(rows[1], (1, b"b".to_vec(), vec![]));
    }

    #[test]
    fn an_empty_snapshot_is_a_header_and_a_trailer() {
        let (bytes, summary) = write(&[]);
        let (_, rows, read) = read_all(&bytes).unwrap();
        assert!(rows.is_empty());
        assert_eq!(read, summary);
    }

    #[test]
    fn damage_anywhere_is_refused() {
        let (bytes, _) = write(&[(1, b"key", b"value"), (2, b"other", b"row")]);
        // Flip one bit in each byte in turn: every single change is caught.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(read_all(&bad).is_err(), "a flipped bit at byte {i} went unnoticed");
        }
        let mut value = bytes.clone();
        let at = bytes.len() - TRAILER_BYTES as usize - 2; // the last value's last byte
        value[at] ^= 1;
        assert!(matches!(read_all(&value), Err(FormatError::Checksum { .. })), "a changed value byte");
        for cut in [0, 5, 12, 20, bytes.len() - 1] {
            assert!(matches!(read_all(&bytes[..cut]), Err(FormatError::Damaged(_) | FormatError::BadMagic)), "{cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(read_all(&longer), Err(FormatError::Damaged(_))));
        for v in [0, FORMAT_VERSION + 1] {
            let mut version = bytes.clone();
            version[8..12].copy_from_slice(&v.to_le_bytes());
            assert!(matches!(read_all(&version), Err(FormatError::Version(x)) if x == v), "version {v}");
        }
    }

    /// Dirty-table entries share the record layout, told apart by the tag bit of the shard.
    #[test]
    fn dirty_records_carry_their_shard_and_index() {
        let mut w = SnapshotWriter::new(Vec::new(), &header()).unwrap();
        w.record(2, b"a", b"x").unwrap();
        w.dirty_record(2, b"a", 41).unwrap();
        assert!(w.record(DIRTY_TAG | 2, b"b", b"y").is_err(), "a shard number with the tag bit");
        let (bytes, _) = w.finish().unwrap();
        let (_, rows, _) = read_all(&bytes).unwrap();
        let tables: Vec<RecordTable> = rows.iter().map(|(s, _, _)| RecordTable::of(*s)).collect();
        assert_eq!(tables, [RecordTable::Shard(2), RecordTable::Dirty(2)]);
        assert_eq!(dirty_index(&rows[1].2).unwrap(), 41);
        assert!(matches!(dirty_index(b"short"), Err(FormatError::Damaged(_))));
    }

    /// A file of the previous release reads, with no move state.
    #[test]
    fn a_version_1_file_reads_without_move_state() {
        let mut w = SnapshotWriter::new_v1(Vec::new(), &header()).unwrap();
        w.record(1, b"a", b"x").unwrap();
        let (bytes, summary) = w.finish().unwrap();
        assert_eq!(bytes[8..12], 1u32.to_le_bytes());
        let (h, rows, read) = read_all(&bytes).unwrap();
        let none =
            SnapshotHeader { moves: MoveState::default(), modulus: None, acquired_at: BTreeMap::new(), ..header() };
        assert_eq!(h, none);
        assert_eq!(rows, [(1, b"a".to_vec(), b"x".to_vec())]);
        assert_eq!(read, summary);
    }

    /// A file of version 2 reads, with no owner epochs.
    #[test]
    fn a_version_2_file_reads_without_owner_epochs() {
        let h = header();
        let v2 = SnapshotHeaderV2 {
            meta: h.meta.clone(),
            owned: h.owned.clone(),
            released_at: h.released_at.clone(),
            moves: h.moves.clone(),
            modulus: h.modulus,
        };
        let mut w = SnapshotWriter::start(Vec::new(), 2, &codec::encode(&v2).unwrap()).unwrap();
        w.record(1, b"a", b"x").unwrap();
        let (bytes, _) = w.finish().unwrap();
        let (read, rows, _) = read_all(&bytes).unwrap();
        assert_eq!(read, SnapshotHeader { acquired_at: BTreeMap::new(), ..header() });
        assert_eq!(rows.len(), 1);
    }
}
