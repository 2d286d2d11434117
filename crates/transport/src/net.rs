//! Socket I/O behind a small trait, so a simulated network can stand in for TCP.
//!
//! The transport asks a [`Network`] for two things: a listener on an address, and a connection
//! to an address. A connection is a pair of byte-stream halves. [`TcpNetwork`] is the real
//! one (with `TCP_NODELAY`, since the transport coalesces writes itself).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// A boxed future, for object-safe async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The reading half of a connection.
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;

/// The writing half of a connection.
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// An open byte stream to another node.
pub struct Connection {
    /// Bytes from the peer.
    pub read: ReadHalf,
    /// Bytes to the peer.
    pub write: WriteHalf,
    /// The peer's address.
    pub peer_addr: SocketAddr,
}

/// Where connections come from.
pub trait Network: Send + Sync + 'static {
    /// Listens on `addr` (port 0 picks a free port).
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>>;

    /// Connects to `addr`.
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Connection>>;

    /// Whether this network is a simulation inside this process, whose runs must replay from
    /// a seed: the node then draws its handshakes' keys from its seed
    /// ([`crate::NodeBuilder::seed`]) instead of the operating system. Never true for a
    /// network whose bytes leave the process: anyone who knows the seed could read them.
    fn deterministic(&self) -> bool {
        false
    }
}

/// Accepts connections.
pub trait Listener: Send + Sync + 'static {
    /// The address it listens on.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// The next incoming connection.
    fn accept(&self) -> BoxFuture<'_, io::Result<Connection>>;
}

/// Real TCP through tokio.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpNetwork;

impl Network for TcpNetwork {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            Ok(Box::new(TcpListener(listener)) as Box<dyn Listener>)
        })
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move { into_connection(tokio::net::TcpStream::connect(addr).await?) })
    }
}

struct TcpListener(tokio::net::TcpListener);

impl Listener for TcpListener {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn accept(&self) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move { into_connection(self.0.accept().await?.0) })
    }
}

fn into_connection(stream: tokio::net::TcpStream) -> io::Result<Connection> {
    stream.set_nodelay(true)?;
    let peer_addr = stream.peer_addr()?;
    let (read, write) = stream.into_split();
    Ok(Connection { read: Box::new(read), write: Box::new(write), peer_addr })
}
