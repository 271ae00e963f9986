//! The unix socket between the old and the new process: SOCK_SEQPACKET, so each message of
//! `wire` is one datagram, with descriptors beside it (SCM_RIGHTS). Blocking, with a timeout
//! on every call: it runs on the upgrade's own thread (old process) or before the workers
//! start (new process), never on a worker.

use super::wire::{Message, WireError, MAX_FDS_PER_MESSAGE, MAX_MESSAGE_BYTES};
use rustix::net::{
    recvmsg, sendmsg, socketpair, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage,
    RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("the other process closed the upgrade socket")]
    Closed,
    #[error("no message within {0:?}")]
    TimedOut(Duration),
    #[error("upgrade socket: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("expected {expected} descriptor(s) beside the message, got {got}")]
    Fds { expected: usize, got: usize },
    /// The kernel could not give this process every descriptor beside a message (MSG_CTRUNC):
    /// it is out of descriptors (RLIMIT_NOFILE). Those it did give are closed again.
    #[error("descriptors beside a message were cut short (MSG_CTRUNC): this process has no room for them (open-file limit)")]
    Truncated,
}

/// One end of the upgrade's socket.
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// Both ends, close-on-exec (the caller clears the flag on the end it passes on).
    pub fn pair() -> std::io::Result<(Channel, OwnedFd)> {
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((Channel { fd: ours }, theirs))
    }

    /// The end this process was handed.
    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel { fd }
    }

    /// Sends one message, with `fds` beside it (at most [`MAX_FDS_PER_MESSAGE`]), waiting at
    /// most `timeout` for room.
    pub fn send(
        &self,
        m: &Message,
        fds: &[BorrowedFd<'_>],
        timeout: Duration,
    ) -> Result<(), ChannelError> {
        assert!(fds.len() <= MAX_FDS_PER_MESSAGE, "fds per message");
        socket2::SockRef::from(&self.fd).set_write_timeout(Some(at_least_1ms(timeout)))?;
        let bytes = m.encode();
        let mut space =
            [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            control.push(SendAncillaryMessage::ScmRights(fds));
        }
        let sent = retry_interrupted(|| {
            sendmsg(
                &self.fd,
                &[IoSlice::new(&bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            )
        })
        .map_err(|e| match e {
            rustix::io::Errno::AGAIN => ChannelError::TimedOut(timeout),
            rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET => ChannelError::Closed,
            e => ChannelError::Io(e.into()),
        })?;
        debug_assert_eq!(sent, bytes.len(), "a datagram is sent whole");
        Ok(())
    }

    /// Sends `fds` in `fds` messages of at most [`MAX_FDS_PER_MESSAGE`] each. They are
    /// only borrowed: the receiver gets duplicates, and this process needs no more
    /// descriptors for it.
    pub fn send_fds(&self, fds: &[BorrowedFd<'_>], timeout: Duration) -> Result<(), ChannelError> {
        for batch in fds.chunks(MAX_FDS_PER_MESSAGE) {
            let m = Message::Fds {
                count: batch.len() as u16,
            };
            self.send(&m, batch, timeout)?;
        }
        Ok(())
    }

    /// Receives one message and the descriptors beside it, waiting at most `timeout`.
    pub fn recv(&self, timeout: Duration) -> Result<(Message, Vec<OwnedFd>), ChannelError> {
        socket2::SockRef::from(&self.fd).set_read_timeout(Some(at_least_1ms(timeout)))?;
        let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
        let mut space =
            [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = retry_interrupted(|| {
            recvmsg(
                &self.fd,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )
        })
        .map_err(|e| match e {
            rustix::io::Errno::AGAIN => ChannelError::TimedOut(timeout),
            rustix::io::Errno::CONNRESET => ChannelError::Closed,
            e => ChannelError::Io(e.into()),
        })?;
        // Received descriptors are ours from here on, whatever the message turns out to be.
        let mut fds = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = m {
                fds.extend(rights);
            }
        }
        // Out of descriptors, the kernel drops what does not fit and says so: never go on
        // with part of them (the upgrade fails and the old process keeps everything).
        if got.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
            return Err(ChannelError::Truncated);
        }
        if got.bytes == 0 {
            return Err(ChannelError::Closed);
        }
        let m = Message::decode(&buf[..got.bytes.min(buf.len())])?;
        let expected = match m {
            Message::Fds { count } => count as usize,
            _ => 0,
        };
        if fds.len() != expected {
            return Err(ChannelError::Fds {
                expected,
                got: fds.len(),
            });
        }
        Ok((m, fds))
    }

    /// Receives `n` descriptors sent by [`Channel::send_fds`].
    pub fn recv_fds(&self, n: usize, timeout: Duration) -> Result<Vec<OwnedFd>, ChannelError> {
        let mut all = Vec::with_capacity(n);
        while all.len() < n {
            match self.recv(timeout)? {
                (Message::Fds { .. }, fds) => all.extend(fds),
                (other, _) => {
                    return Err(ChannelError::Io(std::io::Error::other(format!(
                        "expected descriptors, got {other:?}"
                    ))))
                }
            }
        }
        if all.len() != n {
            return Err(ChannelError::Fds {
                expected: n,
                got: all.len(),
            });
        }
        Ok(all)
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A signal to this process (SIGCHLD, a SIGHUP on its way to the signal thread) interrupts a
/// blocking call on whichever thread it lands: that is not the other process's doing.
fn retry_interrupted<T>(mut call: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match call() {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other,
        }
    }
}

fn at_least_1ms(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// 450 descriptors cross in three messages, each still naming its socket.
    #[test]
    fn descriptors_cross_in_batches() {
        let (a, b) = Channel::pair().unwrap();
        let b = Channel::from_fd(b);
        let t = Duration::from_secs(5);
        let pairs: Vec<(
            std::os::unix::net::UnixStream,
            std::os::unix::net::UnixStream,
        )> = (0..450)
            .map(|_| std::os::unix::net::UnixStream::pair().unwrap())
            .collect();
        let sent: Vec<OwnedFd> = pairs
            .iter()
            .map(|(x, _)| x.try_clone().unwrap().into())
            .collect();
        let sender = std::thread::spawn(move || {
            let borrowed: Vec<BorrowedFd<'_>> = sent.iter().map(|f| f.as_fd()).collect();
            a.send_fds(&borrowed, t).map(|_| a)
        });
        let got = b.recv_fds(450, t).unwrap();
        let _a = sender.join().unwrap().unwrap();
        assert_eq!(got.len(), 450);
        for (i, fd) in got.into_iter().enumerate() {
            let mut s = std::os::unix::net::UnixStream::from(fd);
            s.write_all(&[i as u8]).unwrap();
            let mut one = [0u8; 1];
            (&pairs[i].1).read_exact(&mut one).unwrap();
            assert_eq!(one[0], i as u8);
        }
    }

    #[test]
    fn a_closed_peer_and_silence_are_told_apart() {
        let (a, b) = Channel::pair().unwrap();
        let err = a.recv(Duration::from_millis(20)).unwrap_err();
        assert!(matches!(err, ChannelError::TimedOut(_)), "{err}");
        drop(b);
        let err = a.recv(Duration::from_millis(20)).unwrap_err();
        assert!(matches!(err, ChannelError::Closed), "{err}");
    }

    #[test]
    fn a_message_of_another_version_is_refused() {
        let (a, b) = Channel::pair().unwrap();
        let b = std::os::unix::net::UnixDatagram::from(b);
        b.send(&Message::Taken { workers: 1 }.encode_as(9)).unwrap();
        let err = a.recv(Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(err, ChannelError::Wire(WireError::Version(9))),
            "{err}"
        );
    }
}
