//! Snapshot data as a stream of chunks, so that one transport serves every group type: the
//! station's snapshot is a small `Vec<u8>`, an order's is a file of any size
//! ([`crate::order::snapshot_file::SnapshotFile`]).
//!
//! The sender reads the data as chunks; the receiver assembles them (in memory, or into a
//! temporary file) and only hands the result to Raft once the length and the crc32 of the
//! whole stream, sent in a trailer, match. Both sides compute the crc32 as bytes pass, so it
//! costs no second pass over the data.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use futures::Stream;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::registry::TransportError;

/// Bytes per chunk a sender sends: large enough that per-message overhead is small, small
/// enough that a chunk is a short step between checks of the idle timeout and `cancel`.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// Largest chunk a receiver accepts, whatever the sender's chunk size.
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Largest snapshot a receiver assembles in memory (the station's: a cluster map).
pub const MAX_IN_MEMORY_BYTES: u64 = 256 * 1024 * 1024;

/// How long a receiver waits for the next chunk before it gives up and deletes what it has.
pub const RECEIVE_IDLE: Duration = Duration::from_secs(30);

/// A stream of chunks read from snapshot data.
pub type ChunkStream = BoxStream<'static, io::Result<Vec<u8>>>;

/// Snapshot data that can be sent as chunks and rebuilt from them.
pub trait StreamedSnapshot: Sized + Send + Sync + 'static {
    /// What a receiver needs to assemble one (for a file: the directory it goes in).
    type Spool: Clone + Send + Sync + 'static;
    /// Where an incoming snapshot's chunks go until it is complete.
    type Assembler: SnapshotAssembler<Output = Self>;

    /// Length of the byte stream [`StreamedSnapshot::into_chunk_stream`] yields.
    fn byte_len(&self) -> u64;

    /// The data as a stream of chunks of at most `chunk_bytes`.
    fn into_chunk_stream(self, chunk_bytes: usize) -> impl Future<Output = io::Result<ChunkStream>> + Send;

    /// Starts assembling an incoming snapshot of `len` bytes.
    fn assembler(spool: &Self::Spool, len: u64) -> impl Future<Output = io::Result<Self::Assembler>> + Send;

    /// A file the receiver made for this data that installing may not have taken over (the
    /// snapshot was refused, or was older than the state). The transport deletes it.
    fn leftover(&self) -> Option<PathBuf> {
        None
    }
}

/// An incoming snapshot being put together. Dropping it before `finish` discards it.
pub trait SnapshotAssembler: Send + 'static {
    /// The finished snapshot data.
    type Output;
    /// Appends a chunk.
    fn write(&mut self, chunk: Vec<u8>) -> impl Future<Output = io::Result<()>> + Send;
    /// Makes the data durable (where it lives on disk) and returns it.
    fn finish(self) -> impl Future<Output = io::Result<Self::Output>> + Send;
}

/// One message of an incoming snapshot stream, after the head.
#[derive(Debug)]
pub enum Incoming {
    /// The next bytes.
    Data(Vec<u8>),
    /// The end: what the sender sent in all.
    End {
        /// Bytes sent.
        len: u64,
        /// crc32 of all of them.
        crc32: u32,
    },
}

/// Assembles the chunks of `chunks` into snapshot data, checking that the stream is as long
/// as announced (`len`) and as the trailer says, and that its crc32 matches. On any error the
/// partial data is dropped (and a partial file deleted).
pub async fn assemble<SD, S>(spool: &SD::Spool, len: u64, mut chunks: S) -> Result<SD, TransportError>
where
    SD: StreamedSnapshot,
    S: Stream<Item = Result<Incoming, TransportError>> + Unpin + Send,
{
    let bad = |m: String| TransportError::BadSnapshot(m);
    let mut assembler = SD::assembler(spool, len).await.map_err(TransportError::Storage)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut received: u64 = 0;
    loop {
        let next = tokio::time::timeout(RECEIVE_IDLE, chunks.next())
            .await
            .map_err(|_| bad(format!("no chunk for {RECEIVE_IDLE:?} after {received} bytes")))?;
        match next {
            None => return Err(bad(format!("stream ended after {received} of {len} bytes, without a trailer"))),
            Some(Err(e)) => return Err(e),
            Some(Ok(Incoming::Data(chunk))) => {
                if chunk.len() > MAX_CHUNK_BYTES {
                    return Err(bad(format!("chunk of {} bytes; at most {MAX_CHUNK_BYTES} accepted", chunk.len())));
                }
                received += chunk.len() as u64;
                if received > len {
                    return Err(bad(format!("more than the {len} bytes announced")));
                }
                hasher.update(&chunk);
                assembler.write(chunk).await.map_err(TransportError::Storage)?;
            }
            Some(Ok(Incoming::End { len: sent, crc32 })) => {
                if sent != received || received != len {
                    return Err(bad(format!("{received} bytes received, {len} announced, {sent} sent")));
                }
                let actual = hasher.finalize();
                if actual != crc32 {
                    return Err(bad(format!("checksum mismatch: sender {crc32:08x}, received {actual:08x}")));
                }
                return assembler.finish().await.map_err(TransportError::Storage);
            }
        }
    }
}

/// The station's snapshot: small, so it stays in memory.
impl StreamedSnapshot for Vec<u8> {
    type Spool = ();
    type Assembler = VecAssembler;

    fn byte_len(&self) -> u64 {
        self.len() as u64
    }

    async fn into_chunk_stream(self, chunk_bytes: usize) -> io::Result<ChunkStream> {
        let chunk_bytes = chunk_bytes.max(1);
        let chunks: Vec<io::Result<Vec<u8>>> = self.chunks(chunk_bytes).map(|c| Ok(c.to_vec())).collect();
        Ok(futures::stream::iter(chunks).boxed())
    }

    async fn assembler(_: &(), len: u64) -> io::Result<VecAssembler> {
        if len > MAX_IN_MEMORY_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("an in-memory snapshot of {len} bytes; at most {MAX_IN_MEMORY_BYTES}"),
            ));
        }
        Ok(VecAssembler(Vec::with_capacity(len as usize)))
    }
}

/// Assembles a `Vec<u8>` snapshot.
pub struct VecAssembler(Vec<u8>);

impl SnapshotAssembler for VecAssembler {
    type Output = Vec<u8>;

    async fn write(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        self.0.extend_from_slice(&chunk);
        Ok(())
    }

    async fn finish(self) -> io::Result<Vec<u8>> {
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(items: Vec<Incoming>) -> impl Stream<Item = Result<Incoming, TransportError>> + Unpin + Send {
        futures::stream::iter(items.into_iter().map(Ok))
    }

    async fn chunks_of(data: Vec<u8>, n: usize) -> Vec<Incoming> {
        let crc32 = crc32fast::hash(&data);
        let len = data.len() as u64;
        let mut out: Vec<Incoming> =
            data.into_chunk_stream(n).await.unwrap().map(|c| Incoming::Data(c.unwrap())).collect().await;
        out.push(Incoming::End { len, crc32 });
        out
    }

    #[tokio::test]
    async fn a_vec_goes_through_in_chunks() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let msgs = chunks_of(data.clone(), 3000).await;
        assert_eq!(msgs.len(), 5);
        let got: Vec<u8> = assemble::<Vec<u8>, _>(&(), 10_000, stream(msgs)).await.unwrap();
        assert_eq!(got, data);
        let empty: Vec<u8> = assemble::<Vec<u8>, _>(&(), 0, stream(chunks_of(vec![], 10).await)).await.unwrap();
        assert!(empty.is_empty());
    }

    #[tokio::test]
    async fn a_bad_stream_is_refused() {
        let data = vec![1u8; 100];
        let mut msgs = chunks_of(data.clone(), 40).await;
        if let Some(Incoming::Data(c)) = msgs.get_mut(1) {
            c[0] ^= 1;
        }
        let e = assemble::<Vec<u8>, _>(&(), 100, stream(msgs)).await.unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");

        let mut msgs = chunks_of(data.clone(), 40).await;
        msgs.pop();
        let e = assemble::<Vec<u8>, _>(&(), 100, stream(msgs)).await.unwrap_err();
        assert!(e.to_string().contains("without a trailer"), "{e}");

        let e = assemble::<Vec<u8>, _>(&(), 99, stream(chunks_of(data.clone(), 40).await)).await.unwrap_err();
        assert!(e.to_string().contains("more than the 99 bytes"), "{e}");

        let e = assemble::<Vec<u8>, _>(&(), 101, stream(chunks_of(data, 40).await)).await.unwrap_err();
        assert!(e.to_string().contains("101 announced"), "{e}");

        let big = vec![Incoming::Data(vec![0; MAX_CHUNK_BYTES + 1])];
        let e = assemble::<Vec<u8>, _>(&(), 8 * MAX_CHUNK_BYTES as u64, stream(big)).await.unwrap_err();
        assert!(e.to_string().contains("chunk of"), "{e}");

        let e = assemble::<Vec<u8>, _>(&(), MAX_IN_MEMORY_BYTES + 1, stream(vec![])).await.unwrap_err();
        assert!(matches!(e, TransportError::Storage(_)), "{e}");
    }
}
