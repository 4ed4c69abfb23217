//! Frames on the spawner socket: a 4-byte big-endian length, then JSON. The agent sends
//! [`Request`]s, the spawner answers with [`Reply`]s; `Spawned` carries the driver's four pipe
//! ends as `SCM_RIGHTS` (stdin, stdout, stderr, results, in that order).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Larger frames are a broken peer (the largest real one is a refusal with an error message).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// How many descriptors a `Spawned` reply carries.
pub const SPAWNED_FDS: usize = 4;

/// From the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Readiness: is the spawner there and willing to talk to us?
    Ping,
    /// Start a driver for `session` (its workspace is `workspace.root/<session>`).
    Spawn { session: String, generation: u64, nonce: String },
    /// SIGINT to the driver.
    Interrupt,
    /// SIGKILL to the driver's process group and cgroup.
    Kill,
    /// OOM kills in the driver's cgroup so far.
    Stats,
    /// Empty `session`'s workspace and scratch directories as the code's uid (the session is
    /// being deleted; the agent may not be allowed into what the code locked up).
    Clear { session: String },
}

/// From the spawner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Reply {
    Pong,
    /// The driver runs; `cgroup` says whether it has one (OOM counts are worth asking for).
    Spawned {
        pid: i32,
        cgroup: bool,
    },
    Refused {
        message: String,
    },
    /// The driver ended (its process group was killed after it).
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    Stats {
        oom_kills: u64,
    },
    Cleared,
}

/// Header and body of one frame.
pub fn encode<T: Serialize>(frame: &T) -> std::io::Result<Vec<u8>> {
    let body = serde_json::to_vec(frame)?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"));
    }
    let mut bytes = Vec::with_capacity(4 + body.len());
    bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// The length in a frame header, checked.
pub fn body_len(header: [u8; 4]) -> std::io::Result<usize> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes over {MAX_FRAME_BYTES}"),
        ));
    }
    Ok(len)
}

pub fn decode<T: DeserializeOwned>(body: &[u8]) -> std::io::Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    frame: &T,
) -> std::io::Result<()> {
    writer.write_all(&encode(frame)?).await?;
    writer.flush().await
}

/// The next frame, or `None` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
) -> std::io::Result<Option<T>> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0u8; body_len(header)?];
    reader.read_exact(&mut body).await?;
    decode(&body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let sent = Request::Spawn { session: "s1".into(), generation: 2, nonce: "n".into() };
        write_frame(&mut a, &sent).await.expect("write");
        write_frame(&mut a, &Request::Kill).await.expect("write");
        assert_eq!(read_frame::<_, Request>(&mut b).await.expect("read"), Some(sent));
        assert_eq!(read_frame::<_, Request>(&mut b).await.expect("read"), Some(Request::Kill));
        let huge = Reply::Refused { message: "x".repeat(MAX_FRAME_BYTES) };
        assert!(write_frame(&mut a, &huge).await.is_err());
        a.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
        assert!(read_frame::<_, Reply>(&mut b).await.is_err());
        drop(a);
        let (_c, mut d) = tokio::io::duplex(16);
        drop(_c);
        assert_eq!(read_frame::<_, Reply>(&mut d).await.expect("clean end"), None);
    }
}
