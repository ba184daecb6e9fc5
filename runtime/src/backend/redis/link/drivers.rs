//! Whether the current Tokio runtime can run the async Redis client: the client needs
//! the runtime's I/O driver (its sockets) and time driver (its timeouts), and Tokio
//! panics when either is missing. Tokio (1.x) has no way to ask a runtime which drivers
//! it was built with, so the first async call on each runtime tries one of each, a zero
//! sleep and a UDP socket's registration, under `catch_unwind`. The answer is kept per
//! runtime (its [`Id`]): in a thread-local for the last runtime the thread saw (the
//! cost on every later call: one comparison), and in a bounded list for the process, so
//! each runtime is tried once.
//!
//! The panic a missing driver raises is caught, but the process's panic hook still
//! reports it (once per such runtime) before the one WARN that explains it. Under
//! `panic = "abort"` nothing can be caught: no runtime is tried, and each is taken to
//! have its drivers (as Tokio itself assumes).

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use tokio::runtime::{Handle, Id};

/// What the current context offers the async Redis client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drivers {
    /// No Tokio runtime at all.
    NoRuntime,
    /// A runtime without its I/O or time driver (`enable_io`, `enable_time`).
    Missing,
    /// A runtime with both.
    Ready,
}

/// The runtimes the process has tried, the latest last; at most this many are kept (a
/// runtime tried again after it was dropped from the list costs one more try).
const KEPT: usize = 64;

static TRIED: Mutex<VecDeque<(Id, bool)>> = Mutex::new(VecDeque::new());

thread_local! {
    /// The last runtime this thread asked about, and its answer.
    static LAST: Cell<Option<(Id, bool)>> = const { Cell::new(None) };
}

/// What the current context offers the async Redis client.
pub(crate) fn here() -> Drivers {
    let Ok(handle) = Handle::try_current() else {
        return Drivers::NoRuntime;
    };
    let id = handle.id();
    let ready = match LAST.with(Cell::get) {
        Some((last, ready)) if last == id => ready,
        _ => {
            let ready = known(id).unwrap_or_else(|| tried(id));
            LAST.with(|last| last.set(Some((id, ready))));
            ready
        }
    };
    if ready {
        Drivers::Ready
    } else {
        Drivers::Missing
    }
}

fn tried_list() -> std::sync::MutexGuard<'static, VecDeque<(Id, bool)>> {
    TRIED.lock().unwrap_or_else(PoisonError::into_inner)
}

fn known(id: Id) -> Option<bool> {
    tried_list()
        .iter()
        .find(|(tried, _)| *tried == id)
        .map(|&(_, ready)| ready)
}

/// Tries the current runtime's drivers and records the answer.
fn tried(id: Id) -> bool {
    let ready = has_drivers();
    let mut list = tried_list();
    if !list.iter().any(|(tried, _)| *tried == id) {
        if list.len() == KEPT {
            list.pop_front();
        }
        list.push_back((id, ready));
    }
    ready
}

#[cfg(panic = "abort")]
fn has_drivers() -> bool {
    true
}

#[cfg(not(panic = "abort"))]
fn has_drivers() -> bool {
    // Nothing below can leave shared state half-changed: each step owns what it makes.
    let timer = std::panic::catch_unwind(|| drop(tokio::time::sleep(std::time::Duration::ZERO)));
    // One missing driver is enough to know: the I/O driver is not tried then, so the
    // panic hook prints one caught panic, not two.
    if timer.is_err() {
        return false;
    }
    let io = std::panic::catch_unwind(|| {
        // A socket that cannot be made says nothing either way: count the driver in.
        let Ok(socket) = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)) else {
            return;
        };
        if socket.set_nonblocking(true).is_ok() {
            drop(tokio::net::UdpSocket::from_std(socket));
        }
    });
    io.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(enable: bool) -> tokio::runtime::Runtime {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        if enable {
            builder.enable_all();
        }
        match builder.build() {
            Ok(runtime) => runtime,
            Err(err) => panic!("cannot build a runtime: {err}"),
        }
    }

    #[test]
    fn a_runtime_without_drivers_is_told_apart_from_one_with_them() {
        assert_eq!(here(), Drivers::NoRuntime);
        let (bare, full) = (runtime(false), runtime(true));
        assert_eq!(bare.block_on(async { here() }), Drivers::Missing);
        assert_eq!(full.block_on(async { here() }), Drivers::Ready);
        // Asked again (the thread-local answer of another runtime in between).
        assert_eq!(bare.block_on(async { here() }), Drivers::Missing);
        assert_eq!(full.block_on(async { here() }), Drivers::Ready);
    }

    #[test]
    fn the_list_of_tried_runtimes_is_bounded() {
        for _ in 0..(KEPT + 8) {
            let full = runtime(true);
            assert_eq!(full.block_on(async { here() }), Drivers::Ready);
        }
        assert!(tried_list().len() <= KEPT);
    }
}
