//! [`CountingProxy`]: a TCP proxy in front of a test server that records every command
//! a client sends (by name), so round trips are counted on the wire, not assumed. It
//! can also stall the link ([`CountingProxy::stall`]): requests are still read and
//! recorded, but not forwarded until [`CountingProxy::resume`], as with a server that
//! stopped answering (SIGSTOP) or a link that drops packets. And it can switch its
//! upstream ([`CountingProxy::retarget`]), as a DNS name or a virtual IP moved to a
//! promoted replica: new connections go to the new server. A connection whose server
//! closed it is closed on the client's side too. And it can cut a connection right
//! after a request reached the server, before its reply ([`CountingProxy::cut_after`]):
//! the request ran, the client never hears so. And it can hold back the reply to one
//! request ([`CountingProxy::hold_reply_to`]) until told to relay it, the other
//! connections going on: a read in flight while something else happens.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;

/// Forwards `127.0.0.1:port()` to a server, recording the commands sent to it.
pub struct CountingProxy {
    port: u16,
    commands: Arc<Mutex<Vec<String>>>,
    gate: Arc<Gate>,
    upstream: Arc<Mutex<String>>,
    cut: Arc<Cut>,
    hold: Arc<Hold>,
}

/// The reply held back: to the next request whose bytes contain `marker` (once).
#[derive(Default)]
struct Hold {
    marker: Mutex<Option<Vec<u8>>>,
    /// Whether that reply arrived from the server (held), and whether it may go on.
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Hold {
    fn state(&self) -> std::sync::MutexGuard<'_, (bool, bool)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `raw` is the request whose reply is to be held (disarms if so).
    fn matches(&self, raw: &[u8]) -> bool {
        let mut armed = self.marker.lock().unwrap_or_else(PoisonError::into_inner);
        let hit = armed
            .as_ref()
            .is_some_and(|marker| raw.windows(marker.len()).any(|w| w == marker.as_slice()));
        if hit {
            armed.take();
        }
        hit
    }

    /// The reply arrived: holds it until released.
    fn arrived(&self) {
        let mut state = self.state();
        state.0 = true;
        self.changed.notify_all();
        while !state.1 {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The request to cut a connection after (once): one whose bytes contain this.
type Cut = Mutex<Option<Vec<u8>>>;

/// Whether requests are held back, and the signal that they may go again.
#[derive(Default)]
struct Gate {
    stalled: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn set(&self, stalled: bool) {
        *self.stalled.lock().unwrap_or_else(PoisonError::into_inner) = stalled;
        self.opened.notify_all();
    }

    /// Blocks while the link is stalled.
    fn pass(&self) {
        let mut stalled = self.stalled.lock().unwrap_or_else(PoisonError::into_inner);
        while *stalled {
            stalled = self
                .opened
                .wait(stalled)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl CountingProxy {
    /// Starts a proxy to `127.0.0.1:upstream`.
    ///
    /// # Panics
    /// If it cannot listen.
    pub fn start(upstream: u16) -> Self {
        Self::start_to(format!("127.0.0.1:{upstream}"))
    }

    /// Starts a proxy to `upstream` (`host:port`).
    ///
    /// # Panics
    /// If it cannot listen.
    pub fn start_to(upstream: String) -> Self {
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(listener) => listener,
            Err(err) => panic!("proxy cannot listen: {err}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let commands = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Gate::default());
        let upstream = Arc::new(Mutex::new(upstream));
        let (log, shared_gate) = (Arc::clone(&commands), Arc::clone(&gate));
        let target = Arc::clone(&upstream);
        let cut = Arc::new(Cut::default());
        let shared_cut = Arc::clone(&cut);
        let hold = Arc::new(Hold::default());
        let shared_hold = Arc::clone(&hold);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let log = Arc::clone(&log);
                let upstream = target
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let gate = Arc::clone(&shared_gate);
                let cut = Arc::clone(&shared_cut);
                let hold = Arc::clone(&shared_hold);
                thread::spawn(move || {
                    let _ = forward(client, &upstream, &log, &gate, &cut, &hold);
                });
            }
        });
        Self {
            port,
            commands,
            gate,
            upstream,
            cut,
            hold,
        }
    }

    /// Holds back the reply to the next request containing `marker` (once): the
    /// request reaches the server, which runs it, but its reply is relayed only after
    /// [`release_reply`](Self::release_reply). Other connections go on meanwhile.
    pub fn hold_reply_to(&self, marker: &[u8]) {
        *self.hold.state() = (false, false);
        *self
            .hold
            .marker
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(marker.to_vec());
    }

    /// Blocks until the reply [`hold_reply_to`](Self::hold_reply_to) asked for came
    /// back from the server (so the request ran) and is held.
    pub fn wait_reply_held(&self) {
        let mut state = self.hold.state();
        while !state.0 {
            state = self
                .hold
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Relays the held reply.
    pub fn release_reply(&self) {
        self.hold.state().1 = true;
        self.hold.changed.notify_all();
    }

    /// Cuts the connection that sends the next request containing `marker` (once):
    /// the request is forwarded to the server, which runs it, but its reply is never
    /// relayed and the client's side is closed, as when a server or link dies right
    /// after running a request.
    pub fn cut_after(&self, marker: &[u8]) {
        *self.cut.lock().unwrap_or_else(PoisonError::into_inner) = Some(marker.to_vec());
    }

    /// Sends new connections to `127.0.0.1:upstream` from now on (open ones stay
    /// where they are, until their server closes them).
    pub fn retarget(&self, upstream: u16) {
        *self.upstream.lock().unwrap_or_else(PoisonError::into_inner) =
            format!("127.0.0.1:{upstream}");
    }

    /// Stalls the link: requests (on every connection, new ones included) are
    /// recorded but held back, so clients wait for replies until their timeouts.
    pub fn stall(&self) {
        self.gate.set(true);
    }

    /// Lets held-back and later requests through again.
    pub fn resume(&self) {
        self.gate.set(false);
    }

    /// The proxy's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The command names sent so far, in order (upper case).
    pub fn commands(&self) -> Vec<String> {
        self.commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the commands recorded so far.
    pub fn clear(&self) {
        self.commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

fn forward(
    client: TcpStream,
    upstream: &str,
    log: &Mutex<Vec<String>>,
    gate: &Gate,
    cut: &Cut,
    hold: &Arc<Hold>,
) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (mut to_client, mut from_server) = (client.try_clone()?, server.try_clone()?);
    // Set before a cut request is forwarded: its reply (and anything after) is dropped.
    let silenced = Arc::new(AtomicBool::new(false));
    let relaying = Arc::clone(&silenced);
    // Set before a request whose reply is held is forwarded: its reply is the next.
    let holding = Arc::new(AtomicBool::new(false));
    let (next_held, hold_replies) = (Arc::clone(&holding), Arc::clone(hold));
    thread::spawn(move || {
        let mut buffer = [0; 16 * 1024];
        loop {
            match from_server.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) if !relaying.load(Ordering::SeqCst) => {
                    if next_held.swap(false, Ordering::SeqCst) {
                        hold_replies.arrived();
                    }
                    if to_client.write_all(&buffer[..read]).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
            }
        }
        // The server closed the link (or died): close the client's too, as a direct
        // connection would be.
        let _ = to_client.shutdown(std::net::Shutdown::Both);
    });
    let closer = client.try_clone()?;
    let mut requests = BufReader::new(client);
    let mut to_server = server;
    loop {
        let (name, raw) = read_command(&mut requests)?;
        log.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(name);
        gate.pass();
        let cutting = {
            let mut armed = cut.lock().unwrap_or_else(PoisonError::into_inner);
            let hit = armed
                .as_ref()
                .is_some_and(|marker| raw.windows(marker.len()).any(|w| w == marker.as_slice()));
            if hit {
                armed.take();
            }
            hit
        };
        if cutting {
            silenced.store(true, Ordering::SeqCst);
        }
        if hold.matches(&raw) {
            holding.store(true, Ordering::SeqCst);
        }
        to_server.write_all(&raw)?;
        if cutting {
            let _ = closer.shutdown(std::net::Shutdown::Both);
            return Ok(());
        }
    }
}

/// Reads one RESP request (`*N` then N bulk strings): its name and its raw bytes.
fn read_command(reader: &mut impl BufRead) -> std::io::Result<(String, Vec<u8>)> {
    let mut raw = Vec::new();
    let count = read_header(reader, b'*', &mut raw)?;
    let mut name = String::new();
    for index in 0..count {
        let len = read_header(reader, b'$', &mut raw)?;
        let mut bulk = vec![0; len + 2];
        reader.read_exact(&mut bulk)?;
        if index == 0 {
            name = String::from_utf8_lossy(&bulk[..len]).to_uppercase();
        }
        raw.extend_from_slice(&bulk);
    }
    Ok((name, raw))
}

fn read_header(reader: &mut impl BufRead, marker: u8, raw: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    raw.extend_from_slice(&line);
    let text = String::from_utf8_lossy(&line);
    text.trim_end()
        .strip_prefix(char::from(marker))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not a RESP request: {text:?}")))
}
