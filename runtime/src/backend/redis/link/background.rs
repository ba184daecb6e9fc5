//! The skeleton both background connections run on (the near cache's tracking
//! connection, the lock wake-up subscriber): a thread of its own with a current-thread
//! Tokio runtime, so blocking and async callers share it; it connects to the server (on
//! Sentinel, the master named now), serves until the link ends, tells its owner, and
//! reconnects after a back-off from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`], asking the
//! Sentinels for the master again after a failure. It ends soon after its owner is
//! dropped. RESP3 pushes reach the owner through [`Pushes`].

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::{PushInfo, PushKind, RedisError};
use tokio::sync::Notify;

use super::{MAX_BACKOFF, Node, Timeouts};

/// The first pause before reconnecting, doubled after each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// How one connection (or one attempt) ended.
pub(crate) enum Ended {
    /// The owner is gone: stop.
    Dropped,
    /// Connect again at once (the session changed how it connects).
    Again,
    /// The link failed, or could not be made: connect again after the back-off (which
    /// starts over if the link had `served`).
    Failed { err: RedisError, served: bool },
}

/// What runs on the skeleton.
pub(crate) trait Session: Send + 'static {
    /// The thread's name, and what the warnings call the connection.
    const THREAD: &'static str;
    const WHAT: &'static str;

    /// Waits until a connection is wanted; `false`: the owner is gone.
    async fn wanted(&mut self) -> bool {
        true
    }

    /// Connects to `server` and serves until the link ends.
    async fn serve(&mut self, server: redis::Client) -> Ended;

    /// Tells the owner the link ended (before the pause).
    fn ended(&mut self, ended: &Ended);
}

/// Runs `session` against `node` on a thread of its own; `false` (after a WARN) if the
/// thread or its runtime cannot start.
pub(crate) fn spawn<S: Session>(node: Node, timeouts: Timeouts, session: S) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let started = runtime.and_then(|runtime| {
        std::thread::Builder::new()
            .name(S::THREAD.into())
            .spawn(move || runtime.block_on(run(&node, timeouts.connect, session)))
    });
    if let Err(err) = &started {
        tracing::warn!(error = %err, "cannot start the {}'s thread; it stays off", S::WHAT);
    }
    started.is_ok()
}

async fn run<S: Session>(node: &Node, connect_timeout: Duration, mut session: S) {
    let mut backoff = FIRST_BACKOFF;
    while session.wanted().await {
        let ended = match node.client_async(connect_timeout).await {
            Ok(server) => session.serve(server).await,
            Err(err) => Ended::Failed { err, served: false },
        };
        session.ended(&ended);
        match ended {
            Ended::Dropped => return,
            Ended::Again => {}
            Ended::Failed { err, served } => {
                // The master may have changed: ask the Sentinels again.
                node.forget();
                if served {
                    backoff = FIRST_BACKOFF;
                }
                tracing::debug!(error = %err, "{} disconnected; reconnecting", S::WHAT);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Whoever takes a background connection's pushes.
pub(crate) trait Listener: Send + Sync + 'static {
    /// A push from the connection opened as `generation`.
    fn on_push(&self, push: &PushInfo, generation: u64);
}

/// Hands one connection's RESP3 pushes to its listener while the listener lives; a
/// `Disconnection` also wakes [`broken`](Self::broken).
#[derive(Clone)]
pub(crate) struct Pushes {
    to: Weak<dyn Listener>,
    generation: u64,
    broken: Arc<Notify>,
}

impl Pushes {
    pub(crate) fn new(to: Weak<dyn Listener>, generation: u64) -> Self {
        Self {
            to,
            generation,
            broken: Arc::new(Notify::new()),
        }
    }

    /// Notified when the connection is lost.
    pub(crate) fn broken(&self) -> Arc<Notify> {
        Arc::clone(&self.broken)
    }
}

impl redis::aio::AsyncPushSender for Pushes {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        let to = self.to.upgrade().ok_or(redis::aio::SendError)?;
        if info.kind == PushKind::Disconnection {
            self.broken.notify_one();
        }
        to.on_push(&info, self.generation);
        Ok(())
    }
}
