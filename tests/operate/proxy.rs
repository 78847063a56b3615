//! A TCP proxy in front of RabbitMQ that a test can cut and restore, so that a process
//! loses its broker without the shared broker being stopped.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards 127.0.0.1:`port()` to a target address while up. [`Proxy::cut`] closes every
/// forwarded connection and drops new ones at once (the process sees the broker go away);
/// [`Proxy::restore`] forwards again. Stopped when dropped.
#[derive(Debug)]
pub(crate) struct Proxy {
    addr: SocketAddr,
    up: Arc<watch::Sender<bool>>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1, forwarding to `target` (`host:port`).
    pub(crate) async fn start(target: String) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap_or_else(|e| panic!("proxy bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy addr: {e}"));
        let up = Arc::new(watch::Sender::new(true));
        let state = up.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*state.borrow() {
                    drop(client);
                    continue;
                }
                let mut down = state.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { addr, up, task }
    }

    /// The port to connect to.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Closes every connection and refuses new ones.
    pub(crate) fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Forwards new connections again.
    pub(crate) fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}
