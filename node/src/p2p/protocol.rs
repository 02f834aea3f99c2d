//! What nodes send each other (docs/protocol.md, "Peer-to-peer").
//!
//! * Gossip topics, one pair per network: blocks and ops, each message the
//!   canonical encoding of one [`Block`] or [`Op`].
//! * The sync protocol (request-response): a peer's status, headers after a
//!   locator, and block bodies by hash. Frames are `u32le(len) || bincode`,
//!   with hard caps on both sides.

use bincode::{Decode, Encode};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;
use xirtam_proofs::block::Block;
use xirtam_proofs::header::Header;
use xirtam_proofs::params::Params;
use xirtam_proofs::{Hash, decode, encode};

/// Most locator hashes a peer may send.
pub const MAX_LOCATOR: usize = 64;
/// A sync request not answered within this is a failure (a strike when
/// it was the sync peer, which is then not synced from for a backoff): a
/// peer that advertises work and then stalls costs about this long per
/// strike before the next candidate is tried. A maximal
/// blocks response (4 MiB) takes well under a second on any link that can
/// sync at all.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Most headers in one response.
pub const MAX_HEADERS: usize = 2000;
/// Most block hashes in one request.
pub const MAX_BLOCKS_PER_REQUEST: usize = 128;
/// A blocks response stops adding blocks once it is this large (it always
/// holds at least one block if the peer has it).
pub const BLOCKS_RESPONSE_SOFT_BYTES: usize = 4 * 1024 * 1024;
/// Largest request frame.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Largest response frame (the decoder's own limit).
pub const MAX_RESPONSE_BYTES: usize = xirtam_proofs::encoding::MAX_ENCODED_LEN;

/// Short network id used in protocol names: the first 8 bytes of the
/// genesis hash, in hex.
pub fn network_id(params: &Params) -> String {
    hex::encode(&params.genesis_hash.0[..8])
}

/// Gossip topic for blocks.
pub fn blocks_topic(params: &Params) -> String {
    format!("/xirtam/{}/blocks/1", network_id(params))
}

/// Gossip topic for ops.
pub fn ops_topic(params: &Params) -> String {
    format!("/xirtam/{}/ops/1", network_id(params))
}

/// Sync protocol name.
pub fn sync_protocol(params: &Params) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("/xirtam/{}/sync/1", network_id(params)))
        .expect("the name starts with a slash")
}

/// Kademlia protocol name (a network's own DHT).
pub fn kad_protocol(params: &Params) -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("/xirtam/{}/kad/1", network_id(params)))
        .expect("the name starts with a slash")
}

/// Identify protocol version string.
pub fn identify_version(params: &Params) -> String {
    format!("/xirtam/{}/1", network_id(params))
}

/// A sync request.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum SyncRequest {
    /// The peer's genesis and best tip.
    Status,
    /// Main-chain headers after the first locator hash the peer has on its
    /// main chain.
    Headers {
        /// Hashes from the requester's tip back to genesis (at most
        /// [`MAX_LOCATOR`]).
        locator: Vec<Hash>,
        /// Most headers wanted (the peer caps it at [`MAX_HEADERS`]).
        max: u32,
    },
    /// Block bodies by hash (at most [`MAX_BLOCKS_PER_REQUEST`]).
    Blocks {
        /// Wanted blocks, in order.
        hashes: Vec<Hash>,
    },
}

/// A peer's best chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct Status {
    /// Its genesis (a different one means another network).
    pub genesis: Hash,
    /// Tip height.
    pub height: u64,
    /// Tip hash.
    pub tip: Hash,
    /// Cumulative work of the tip, big-endian. A claim only: sync checks
    /// it against the headers it downloads.
    pub work: [u8; 32],
}

/// A sync response.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum SyncResponse {
    /// Answer to [`SyncRequest::Status`].
    Status(Status),
    /// Answer to [`SyncRequest::Headers`], in chain order.
    Headers(Vec<Header>),
    /// Answer to [`SyncRequest::Blocks`]: a prefix of the wanted blocks, in
    /// the order asked (shorter when the peer lacks one or the size cap is
    /// reached).
    Blocks(Vec<Block>),
    /// The request broke a limit; the peer was penalised.
    Refused(String),
}

/// Length-prefixed bincode frames with caps.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let n = u32::from_le_bytes(len) as usize;
    if n > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {n} bytes exceeds {max}"),
        ));
    }
    let mut buf = vec![0u8; n];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: &[u8],
    max: usize,
) -> std::io::Result<()> {
    if bytes.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds {max}", bytes.len()),
        ));
    }
    // `max` fits in u32 (checked by the constants' sizes).
    io.write_all(&(bytes.len() as u32).to_le_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

fn decode_frame<T: Decode<()>>(bytes: &[u8]) -> std::io::Result<T> {
    decode(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = SyncResponse;

    async fn read_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<SyncRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode_frame(&read_frame(io, MAX_REQUEST_BYTES).await?)
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<SyncResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode_frame(&read_frame(io, MAX_RESPONSE_BYTES).await?)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: SyncRequest,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &encode(&req), MAX_REQUEST_BYTES).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: SyncResponse,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &encode(&res), MAX_RESPONSE_BYTES).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::request_response::Codec;
    use xirtam_proofs::params::REGTEST;

    #[test]
    fn frames_round_trip_and_caps_hold() {
        let req = SyncRequest::Headers {
            locator: vec![Hash([1; 32]); 3],
            max: 10,
        };
        let mut buf = Vec::new();
        futures::executor::block_on(async {
            let mut c = SyncCodec;
            let p = sync_protocol(&REGTEST);
            c.write_request(&p, &mut buf, req.clone()).await.unwrap();
            let got = c.read_request(&p, &mut buf.as_slice()).await.unwrap();
            assert_eq!(got, req);
            // A length prefix above the cap is refused before allocating.
            let mut big = (MAX_REQUEST_BYTES as u32 + 1).to_le_bytes().to_vec();
            big.extend_from_slice(&[0; 8]);
            assert!(c.read_request(&p, &mut big.as_slice()).await.is_err());
            // Garbage inside a well-sized frame is a decode error.
            let mut junk = 4u32.to_le_bytes().to_vec();
            junk.extend_from_slice(&[0xff; 4]);
            assert!(c.read_request(&p, &mut junk.as_slice()).await.is_err());
        });
    }

    #[test]
    fn names_are_per_network() {
        assert_ne!(
            blocks_topic(&REGTEST),
            blocks_topic(&xirtam_proofs::params::LOCAL)
        );
        assert!(sync_protocol(&REGTEST).as_ref().starts_with("/xirtam/"));
    }
}
