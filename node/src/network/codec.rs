//! The sync protocol (`/lamina/sync/1`): one request, one response, on its own stream.
//!
//! Peers use it to learn each other's chain and height ([`SyncRequest::Status`]), to
//! download committed blocks ([`SyncRequest::Blocks`]) and to gather the erasure-coded rows
//! a peer keeps of a pruned height ([`SyncRequest::Shares`]). Each message is a big-endian `u32`
//! length followed by that many bytes of borsh. Both directions have a hard size cap that is
//! checked against the length prefix before anything is read, and the buffer grows only as
//! bytes actually arrive, so a peer announcing a large message and sending nothing costs us
//! nothing.

use std::io;

use async_trait::async_trait;
use borsh::{BorshDeserialize, BorshSerialize};
use lamina_primitives::interfaces::da::HeldShares;
use lamina_primitives::{codec, CommittedBlock, Hash};
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;

/// Protocol name negotiated for sync streams.
pub(crate) const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/lamina/sync/1");

/// Largest encoded request. Requests are a few bytes; anything bigger is hostile.
pub(crate) const MAX_REQUEST_BYTES: usize = 1024;

/// Largest encoded response we read. Servers aim for [`SERVE_TARGET_BYTES`]; the slack lets a
/// single block larger than that target still be fetched.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Most blocks served for one [`SyncRequest::Blocks`].
pub(crate) const MAX_BLOCKS_PER_REQUEST: u32 = 256;

/// Encoded size a server stops adding blocks at (it always sends at least one block when it
/// has one, even a bigger one).
pub(crate) const SERVE_TARGET_BYTES: usize = 16 << 20;

/// Buffer growth step when reading: the most we allocate ahead of bytes actually received.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// A request on the sync protocol.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum SyncRequest {
    /// Reply: [`SyncResponse::Status`].
    Status,
    /// Reply: [`SyncResponse::Blocks`] with the committed blocks at heights `from`,
    /// `from + 1`, ... in order, stopping at the first height the server does not have,
    /// after `count` blocks, or at the server's caps (whichever comes first).
    Blocks {
        /// First height wanted.
        from: u64,
        /// How many blocks wanted.
        count: u32,
    },
    /// Reply: [`SyncResponse::Shares`] with the rows of `height`'s extended square the
    /// server keeps (all original rows while it still has the height whole, its assigned
    /// rows once it pruned it), as many as fit in one response.
    Shares {
        /// The height.
        height: u64,
    },
}

/// A response on the sync protocol.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum SyncResponse {
    /// The server's chain and height.
    Status(PeerStatus),
    /// Consecutive committed blocks (possibly none).
    Blocks(Vec<CommittedBlock>),
    /// The server could not answer (e.g. its block store failed).
    Error(String),
    /// Rows of one height's extended square, each to be checked against its row root.
    /// Last, so that the tags of the variants before it stay what they were.
    Shares(HeldShares),
}

/// What a peer tells about itself: which chain it is on and how far it has committed.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PeerStatus {
    /// Chain id from its genesis.
    pub chain_id: String,
    /// Hash of its genesis.
    pub genesis_hash: Hash,
    /// Opaque string that must equal ours for the peer to be compatible (the layer kinds
    /// that have to agree across the network).
    pub compat: String,
    /// Its highest committed height.
    pub committed_height: u64,
}

/// Length-prefixed borsh encoding of [`SyncRequest`] and [`SyncResponse`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SyncCodec;

#[async_trait]
impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = SyncResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, MAX_REQUEST_BYTES).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, MAX_RESPONSE_BYTES).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: SyncRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &request, MAX_REQUEST_BYTES).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: SyncResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &response, MAX_RESPONSE_BYTES).await
    }
}

/// Reads one length-prefixed message of at most `cap` bytes.
pub(crate) async fn read_message<T, M>(io: &mut T, cap: usize) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: BorshDeserialize,
{
    let bytes = read_frame(io, cap).await?;
    codec::decode(&bytes, cap).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads a `u32` length prefix and then that many bytes, refusing lengths over `cap`.
async fn read_frame<T>(io: &mut T, cap: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let len = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if len > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes exceeds the limit of {cap} bytes"),
        ));
    }
    let mut buf = Vec::with_capacity(len.min(READ_CHUNK_BYTES));
    while buf.len() < len {
        if buf.len() == buf.capacity() {
            // Double (amortised copies) but never past `len`, so we hold at most `cap` bytes.
            let target = (buf.capacity() * 2).max(READ_CHUNK_BYTES).min(len);
            buf.reserve_exact(target - buf.len());
        }
        let start = buf.len();
        let end = buf.capacity().min(len).min(start + READ_CHUNK_BYTES);
        buf.resize(end, 0);
        let read = io.read(&mut buf[start..end]).await?;
        buf.truncate(start + read);
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream ended after {start} of {len} announced bytes"),
            ));
        }
    }
    Ok(buf)
}

/// Writes `message` with its length prefix, refusing to send more than `cap` bytes (the
/// peer would drop it anyway).
pub(crate) async fn write_message<T, M>(io: &mut T, message: &M, cap: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    M: BorshSerialize,
{
    let bytes = codec::encode(message);
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|_| bytes.len() <= cap)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "message of {} bytes exceeds the limit of {cap} bytes",
                    bytes.len()
                ),
            )
        })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&bytes).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::io::Cursor;
    use libp2p::request_response::Codec as _;

    fn framed(len: u32, body: &[u8]) -> Vec<u8> {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn variant_tags_are_those_of_the_wire_format() {
        let tag = |bytes: Vec<u8>| bytes[0];
        assert_eq!(tag(codec::encode(&SyncRequest::Status)), 0);
        assert_eq!(
            tag(codec::encode(&SyncRequest::Blocks { from: 1, count: 1 })),
            1
        );
        assert_eq!(tag(codec::encode(&SyncRequest::Shares { height: 1 })), 2);
        assert_eq!(tag(codec::encode(&SyncResponse::Blocks(Vec::new()))), 1);
        assert_eq!(tag(codec::encode(&SyncResponse::Error(String::new()))), 2);
        let held = HeldShares {
            height: 1,
            data_root: Hash::ZERO,
            original_width: 1,
            rows: Vec::new(),
            columns: Vec::new(),
        };
        assert_eq!(tag(codec::encode(&SyncResponse::Shares(held))), 3);
    }

    #[tokio::test]
    async fn round_trips_requests_and_responses() {
        let mut codec = SyncCodec;
        let request = SyncRequest::Blocks { from: 7, count: 3 };
        let mut wire = Cursor::new(Vec::new());
        codec
            .write_request(&SYNC_PROTOCOL, &mut wire, request.clone())
            .await
            .unwrap();
        let mut wire = Cursor::new(wire.into_inner());
        assert_eq!(
            codec.read_request(&SYNC_PROTOCOL, &mut wire).await.unwrap(),
            request
        );

        let response = SyncResponse::Status(PeerStatus {
            chain_id: "lamina-test".into(),
            genesis_hash: Hash::digest(b"genesis"),
            compat: "solo/replicated".into(),
            committed_height: 42,
        });
        let mut wire = Cursor::new(Vec::new());
        codec
            .write_response(&SYNC_PROTOCOL, &mut wire, response.clone())
            .await
            .unwrap();
        let mut wire = Cursor::new(wire.into_inner());
        assert_eq!(
            codec
                .read_response(&SYNC_PROTOCOL, &mut wire)
                .await
                .unwrap(),
            response
        );
    }

    #[tokio::test]
    async fn refuses_length_prefix_over_the_cap_before_reading() {
        let mut codec = SyncCodec;
        // The prefix alone must be enough to refuse: no body follows.
        let mut wire = Cursor::new(framed(MAX_REQUEST_BYTES as u32 + 1, &[]));
        let err = codec
            .read_request(&SYNC_PROTOCOL, &mut wire)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let mut wire = Cursor::new(framed(u32::MAX, &[]));
        let err = codec
            .read_response(&SYNC_PROTOCOL, &mut wire)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn large_announced_length_with_short_body_allocates_little() {
        // A peer announcing the full response cap and then hanging up must not make us
        // allocate the cap.
        let mut wire = Cursor::new(framed(MAX_RESPONSE_BYTES as u32, &[1, 2, 3]));
        let err = read_frame(&mut wire, MAX_RESPONSE_BYTES).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        // A body spanning several chunks is read whole, with capacity bounded by its length.
        let body = vec![9u8; 3 * READ_CHUNK_BYTES + 5];
        let mut wire = Cursor::new(framed(body.len() as u32, &body));
        let read = read_frame(&mut wire, MAX_RESPONSE_BYTES).await.unwrap();
        assert_eq!(read, body);
        assert!(read.capacity() <= body.len());
    }

    #[tokio::test]
    async fn refuses_malformed_and_oversize_messages() {
        let mut codec = SyncCodec;
        // Unknown enum tag.
        let mut wire = Cursor::new(framed(1, &[9]));
        assert!(codec.read_request(&SYNC_PROTOCOL, &mut wire).await.is_err());
        // Trailing bytes after a valid request.
        let mut wire = Cursor::new(framed(2, &[0, 0]));
        assert!(codec.read_request(&SYNC_PROTOCOL, &mut wire).await.is_err());
        // Writing more than the cap is refused instead of sending something the peer drops.
        let mut wire = Cursor::new(Vec::new());
        let huge = SyncResponse::Error("x".repeat(MAX_RESPONSE_BYTES));
        let err = codec
            .write_response(&SYNC_PROTOCOL, &mut wire, huge)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(wire.into_inner().is_empty());
    }
}
