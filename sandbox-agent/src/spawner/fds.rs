//! Passing the driver's pipe ends from the spawner to the agent: one frame sent with
//! `sendmsg(SCM_RIGHTS)`, read back with `recvmsg`. The only `unsafe` here is taking ownership
//! of the descriptors the kernel installed in our table.
#![allow(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::cmsg_space;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

use super::wire::{self, SPAWNED_FDS};

/// Sends `frame` with `fds` attached to its first byte.
pub async fn send_frame<T: Serialize>(
    stream: &mut UnixStream,
    frame: &T,
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    let bytes = wire::encode(frame)?;
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let socket = stream.as_raw_fd();
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let cmsgs = [ControlMessage::ScmRights(&raw)];
            sendmsg::<()>(
                socket,
                &[IoSlice::new(&bytes)],
                &cmsgs,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(std::io::Error::from)
        })
        .await?;
    // The descriptors travelled with the first chunk; the rest of a (rare) short write follows
    // as plain bytes.
    stream.write_all(&bytes[sent..]).await?;
    stream.flush().await
}

/// Reads one frame and the descriptors that came with it (close-on-exec).
pub async fn recv_frame<T: DeserializeOwned>(
    stream: &mut UnixStream,
) -> std::io::Result<(T, Vec<OwnedFd>)> {
    let mut header = [0u8; 4];
    let mut got = 0;
    let mut fds = Vec::new();
    let socket = stream.as_raw_fd();
    while got < header.len() {
        let (n, received) = stream
            .async_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(&mut header[got..])];
                let mut space = cmsg_space!([RawFd; SPAWNED_FDS]);
                let msg = recvmsg::<()>(
                    socket,
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
                )
                .map_err(std::io::Error::from)?;
                let mut received = Vec::new();
                for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(raw) = cmsg {
                        for fd in raw {
                            // SAFETY: the kernel just installed `fd` in our descriptor table for
                            // this message; nothing else refers to it, so we are its only owner.
                            received.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
                if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "more descriptors than expected",
                    ));
                }
                Ok((msg.bytes, received))
            })
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
        fds.extend(received);
    }
    let mut body = vec![0u8; wire::body_len(header)?];
    stream.read_exact(&mut body).await?;
    Ok((wire::decode(&body)?, fds))
}
