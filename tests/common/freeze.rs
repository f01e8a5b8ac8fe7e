//! A TCP proxy that freezes: it forwards new connections to its upstream and copies bytes both
//! ways until [`FreezingProxy::freeze`], which makes every connection open at that moment stop
//! moving bytes in either direction without closing it (no FIN, no RST), as a paused server, a
//! dead host or a dropped route would. Connections made after a freeze pass as before.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct FreezingProxy {
    pub port: u16,
    stopped: Arc<AtomicBool>,
    /// Every connection so far: its two sockets and whether it is frozen.
    links: Arc<Mutex<Vec<Link>>>,
    accepted: Arc<AtomicUsize>,
}

struct Link {
    sockets: [TcpStream; 2],
    frozen: Arc<AtomicBool>,
}

impl FreezingProxy {
    /// A proxy on a free loopback port to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stopped = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<Link>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stop, all, count) = (stopped.clone(), links.clone(), accepted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let frozen = Arc::new(AtomicBool::new(false));
                // Listed before a byte moves, so that a freeze from now on reaches it.
                let mut links = all.lock().unwrap();
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (from, to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    let (frozen, stop) = (frozen.clone(), stop.clone());
                    std::thread::spawn(move || copy(from, to, &frozen, &stop));
                }
                links.push(Link { sockets: [client, server], frozen });
            }
        });
        FreezingProxy { port, stopped, links, accepted }
    }

    /// The upstream's URL through this proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Freezes every connection open now; returns how many.
    pub fn freeze(&self) -> usize {
        let links = self.links.lock().unwrap();
        let mut n = 0;
        for link in links.iter() {
            if !link.frozen.swap(true, Ordering::SeqCst) {
                n += 1;
            }
        }
        n
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` until either closes; once `frozen`, reads and writes nothing more and
/// holds both sockets open until the proxy stops.
fn copy(mut from: TcpStream, mut to: TcpStream, frozen: &AtomicBool, stopped: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        if frozen.load(Ordering::SeqCst) {
            while !stopped.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Bytes read as the freeze came are not passed on either.
        if frozen.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    if !frozen.load(Ordering::SeqCst) {
        let _ = to.shutdown(Shutdown::Write);
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        for link in self.links.lock().unwrap().iter() {
            for socket in &link.sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        // Wakes the accept loop so that it sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
