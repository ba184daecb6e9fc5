//! The skeleton both background connections run on (the near cache's tracking
//! connection, the lock wake-up subscriber): a task on the process's one background
//! thread (a current-thread Tokio runtime, shared by every backend's connections, so
//! blocking and async callers share it, and a release heard by many backends of one
//! process wakes one thread, not one per backend); it connects to the server (on
//! Sentinel, the master named now), serves until the link ends, tells its owner, and
//! reconnects after a back-off from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`], asking the
//! Sentinels for the master again after a failure. The task ends soon after its owner
//! is dropped; the thread, started with the first background connection, stays (idle)
//! for the process's life. RESP3 pushes reach the owner through [`Pushes`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use redis::{PushInfo, PushKind, RedisError};
use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

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
    /// What the warnings call the connection.
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

/// A session's run, made on the background thread (so its future need not be `Send`).
type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// The process's one background thread: a current-thread runtime that runs every
/// backend's background connections (I/O and bookkeeping, never a blocking call). A
/// release heard by many backends in one process wakes that thread once, not a
/// thread per backend. `None` (after a WARN) if it cannot start.
fn background() -> Option<&'static UnboundedSender<Job>> {
    static THREAD: OnceLock<Option<UnboundedSender<Job>>> = OnceLock::new();
    THREAD
        .get_or_init(|| {
            let (jobs, mut queued) = unbounded_channel::<Job>();
            let started = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|runtime| {
                    std::thread::Builder::new()
                        .name(THREAD_NAME.into())
                        .spawn(move || {
                            let local = tokio::task::LocalSet::new();
                            local.block_on(&runtime, async move {
                                while let Some(job) = queued.recv().await {
                                    drop(tokio::task::spawn_local(job()));
                                }
                            });
                        })
                });
            match started {
                Ok(_) => Some(jobs),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot start cache-memoize's background thread; wake-ups and the near cache stay off");
                    None
                }
            }
        })
        .as_ref()
}

/// The background thread's name.
const THREAD_NAME: &str = "cache-memoize-background";

/// Runs `session` against `node` on the process's background thread; `false` if that
/// thread cannot start.
pub(crate) fn spawn<S: Session>(node: Node, timeouts: Timeouts, session: S) -> bool {
    let Some(jobs) = background() else {
        return false;
    };
    let job: Job =
        Box::new(move || Box::pin(async move { run(&node, timeouts.connect, session).await }));
    jobs.send(job).is_ok()
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
