//! Listening sockets that outlive the source serving on them, so that a reload replacing a
//! source whose address did not change hands the very same socket to the new instance: no
//! re-bind, and no connection refused in between (those that arrive queue in the socket's
//! backlog until the new instance accepts them). A source stopping gracefully parks a
//! duplicate of its socket here; a successor listening on that address takes it. What nobody
//! takes within [`STANDBY`] is closed, which frees the port of a removed source.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How long a stopped source's socket waits for a successor. A reload starts the successor
/// as soon as its predecessor has finished, so this only has to cover scheduling.
const STANDBY: Duration = Duration::from_secs(5);

/// Parked sockets by address, each with the number it was parked under (so that the timer of
/// an earlier park does not close a later one).
static PARKED: Mutex<Option<HashMap<SocketAddr, (u64, std::net::TcpListener)>>> = Mutex::new(None);
static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn parked<T>(f: impl FnOnce(&mut HashMap<SocketAddr, (u64, std::net::TcpListener)>) -> T) -> T {
    let mut guard = PARKED.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(HashMap::new))
}

/// A socket listening on `address`: the one a predecessor parked there, or a new one. The
/// [`Standby`] parks it again when the source stops gracefully.
pub(crate) fn listen(address: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, Standby)> {
    let socket = match parked(|sockets| sockets.remove(&address)) {
        Some((_, socket)) => {
            tracing::debug!(%address, "listening on the socket the previous instance kept");
            socket
        }
        None => std::net::TcpListener::bind(address)?,
    };
    socket.set_nonblocking(true)?;
    let standby = socket.try_clone()?;
    let listener = tokio::net::TcpListener::from_std(socket)?;
    Ok((
        listener,
        Standby {
            address,
            socket: standby,
        },
    ))
}

/// A duplicate of a serving source's socket; dropped, it closes with the server's copy.
pub(crate) struct Standby {
    address: SocketAddr,
    socket: std::net::TcpListener,
}

impl Standby {
    /// Keeps the socket listening for a successor, for at most [`STANDBY`]. Call it once the
    /// server has stopped after a graceful stop request.
    pub(crate) fn park(self) {
        let number = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let address = self.address;
        parked(|sockets| sockets.insert(address, (number, self.socket)));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(STANDBY).await;
                parked(|sockets| {
                    if sockets.get(&address).is_some_and(|(n, _)| *n == number) {
                        sockets.remove(&address);
                    }
                });
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn inode(socket: &impl AsRawFd) -> String {
        std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd()))
            .unwrap()
            .display()
            .to_string()
    }

    #[tokio::test]
    async fn a_parked_socket_goes_to_the_next_listener_on_its_address_and_no_further() {
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (first, standby) = listen(address).unwrap();
        let socket = inode(&first);
        drop(first);
        // The server closed its copy: the parked one still accepts.
        standby.park();
        let client = std::net::TcpStream::connect(address).expect("queued in the backlog");
        let (second, standby) = listen(address).unwrap();
        assert_eq!(inode(&second), socket, "a new socket was bound");
        let (accepted, _) = second.accept().await.unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());
        drop((second, standby));
        assert!(
            listen(address).is_ok(),
            "the socket stayed open after its last holder dropped it"
        );
    }
}
