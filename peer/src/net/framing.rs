//! Reading frames from QUIC streams.

use lanspread_proto::wire::{DecodeError, LEN_BYTES};
use quinn::RecvStream;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("stream ended before a whole frame")]
    Eof,
    #[error("bad frame: {0}")]
    Decode(#[from] DecodeError),
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
}

/// Read exactly one frame with `decode`, consuming no byte past it.
/// Cancel-safe only in the sense that a dropped read loses the stream.
pub async fn read_frame<T>(
    recv: &mut RecvStream,
    decode: impl Fn(&[u8]) -> Result<Option<(T, usize)>, DecodeError>,
) -> Result<T, FrameError> {
    // The header first, then exactly the body: pieces that follow a header
    // must stay in the stream for the caller.
    let mut buf = vec![0u8; LEN_BYTES + 1];
    read_exact(recv, &mut buf).await?;
    // Let the decoder check the kind and the size limit before we allocate.
    if let Some((value, _)) = decode(&buf)? {
        return Ok(value);
    }
    let len = u32::from_be_bytes(buf[..LEN_BYTES].try_into().expect("4 bytes")) as usize;
    buf.resize(LEN_BYTES + len, 0);
    read_exact(recv, &mut buf[LEN_BYTES + 1..]).await?;
    match decode(&buf)? {
        Some((value, _)) => Ok(value),
        None => Err(FrameError::Eof),
    }
}

pub async fn read_exact(recv: &mut RecvStream, buf: &mut [u8]) -> Result<(), FrameError> {
    recv.read_exact(buf).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(_) => FrameError::Eof,
        quinn::ReadExactError::ReadError(e) => FrameError::Read(e),
    })
}
