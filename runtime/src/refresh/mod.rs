//! Refreshing stored values, one word per concept:
//!
//! - **forced refresh** ([`scope`]): [`refresh`](fn@crate::refresh) and `force_overwrite`
//!   make a call compute and overwrite (`Refresh::Forced`);
//! - **revalidation** ([`run`]): a value found stale (or drawn for an early refresh)
//!   is returned and refreshed, inline or detached (`Refresh::Revalidate`);
//! - **refresh claim** ([`claim`]): at most one revalidation of a key per process;
//! - **refresh pool** ([`pool`]): the bounded room for detached revalidations.
//!
//! Keeping a held lock alive is **lock renewal** (`lock::renew`), not a refresh.

pub(crate) mod claim;
pub(crate) mod pool;
pub(crate) mod run;
pub(crate) mod scope;

pub use pool::{
    DEFAULT_REFRESH_QUEUE, DEFAULT_REFRESH_WORKERS, MAX_REFRESH_QUEUE, MAX_REFRESH_WORKERS,
    set_refresh_limits,
};
pub use run::{
    memoize_async_detached, memoize_detached, try_memoize_async_detached, try_memoize_detached,
};
pub use scope::{refresh, refresh_async};
