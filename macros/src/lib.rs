//! The `#[cache_memoize]` attribute of the [`cache-memoize`](https://docs.rs/cache-memoize)
//! crate. Depend on `cache-memoize`, which re-exports it; this crate is not used directly.
//!
//! `attr.rs` parses the arguments (with `duration.rs` and `key.rs`), `expand.rs`
//! generates the code (`batch.rs` for `batch`). On an error the function is emitted
//! unchanged beside the error, so one mistake yields one error and the rest of the
//! crate still type-checks.

mod attr;
mod batch;
mod duration;
mod expand;
mod freshness;
mod key;
mod sig;

use proc_macro::TokenStream;
use quote::ToTokens;

/// Memoizes a function in the shared cache backend: the first call for some arguments
/// computes and stores the result; later calls with the same arguments read it back.
///
/// ```
/// use cache_memoize::cache_memoize;
///
/// #[cache_memoize(key = "square:{n}", expire = "1h", lock)]
/// fn square(n: u64) -> u64 {
///     n * n // say, a slow remote call
/// }
///
/// assert_eq!(square(12), 144); // computed and stored
/// assert_eq!(square(12), 144); // read back
/// // `{my_app::square|square:12}` in a crate `my_app`: the function's path, then the template.
/// assert!(square_cache_key(12).as_str().ends_with("::square|square:12}"));
/// ```
///
/// Works on `fn` and `async fn`, free functions, methods and associated functions,
/// generic or not. The stored value must be `Serialize + DeserializeOwned`; the compile
/// error says so on the return type. `-> impl Iterator<Item = T>` is a memoized
/// iterator, streamed while computed and stored in chunks.
///
/// **Defaults to know:** a value lives **30 days** (`expire = "30d"`) and an `Option`
/// result stores `None` too (`cache_none = false` returns it unstored); without `lock`,
/// concurrent misses in other processes may each compute. Until
/// `cache_memoize::set_backend` registers a shared backend (Redis), values are kept per
/// process (the first call says so at INFO). Each function also gets `<name>_cache_key`,
/// `<name>_invalidate` (blocking) and `<name>_invalidate_async` (see `companions`).
/// With `batch`, a function of a collection returning a map is memoized per element,
/// with one body call for the elements missing (see `batch`).
///
/// # What is stored
///
/// - A return type that is a `Result` under any name (`Result<T, E>`, `io::Result<T>`,
///   `anyhow::Result<T>`, `type AppResult<T> = Result<T, AppError>`) stores only `Ok`:
///   an `Err` is returned and nothing is cached. The compiler decides this from the
///   type. A generic `-> T` is stored as it is.
/// - Anything else is stored whole, `None` included (see `cache_none`).
///
/// ```
/// # use cache_memoize::cache_memoize;
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] struct AppError;
/// type AppResult<T> = Result<T, AppError>;
///
/// #[cache_memoize]
/// fn parse(s: &str) -> AppResult<u32> {
///     s.parse().map_err(|_| AppError) // an `Err` is returned, never stored
/// }
/// # assert!(parse("x").is_err());
/// # assert_eq!(parse("7").ok(), Some(7));
/// ```
///
/// # The key
///
/// A key starts with the function's identity: the path of the function item itself, as
/// `core::any::type_name` writes it, with every generic argument in force
/// (`app::report`, `app::Repo<u8>::load`, `<app::User as app::Named>::name`,
/// `app::outer::inner`, `app::parse_as<u32>`), then `|`. So two functions never share a
/// key, whatever their names, unless `shared_key` says they should. Renaming or moving
/// the function, its type or its module changes its keys (a cold start, never a wrong
/// value); changing its body does not (bump `version` when the meaning of its values
/// changes).
///
/// Every parameter, the receiver included, is part of the key unless skipped, so calls
/// that could return different values never share one. Each argument is written by its
/// type: `Display` types by their escaped `Display` output; `Option`, `Vec`, slices,
/// arrays, tuples, maps and sets of key parts by structure (`Some(10)`, `["a","b"]`);
/// byte slices in hex; other `Serialize` types by their encoding. A type that is none
/// of these is a compile error on the parameter. The README's "Keys" section states
/// the exact form.
///
/// # Options
///
/// ## `key = "..."`
///
/// A template: text, `{param}` for an argument, `{param.field}` for a field of one,
/// `{param:?}` for its `Debug` output, `{{`/`}}` for braces. Every parameter must
/// appear or be skipped. The key is the function's identity, `|` and the template
/// (`shared_key` drops the identity). Default: the identity, `|` and every parameter,
/// separated by `:`.
///
/// ```
/// # use cache_memoize::cache_memoize;
/// struct Account { id: u64 }
///
/// impl Account {
///     #[cache_memoize(key = "account:{self.id}:statement:{month:?}")]
///     fn statement(&self, month: (u16, u8)) -> Vec<i64> {
///         vec![self.id as i64, i64::from(month.1)]
///     }
/// }
///
/// let account = Account { id: 7 };
/// assert!(account
///     .statement_cache_key((2024, 5))
///     .as_str()
///     .ends_with("::Account::statement|account:7:statement:(2024,%205)}"));
/// ```
///
/// ## `shared_key`
///
/// With `key = "..."`: the template is the whole key, without the function's identity.
/// For keys other code addresses by their text (`cache_memoize::invalidate("rate:eur")`,
/// the function form, a near-cache `.prefix(..)`, another service) and for functions
/// that share their values on purpose (a sync and an async form of one computation).
/// Two functions with one shared template return each other's values: make sure they
/// compute the same thing. Two that store different types would overwrite each other
/// at every key: the second one's first call says so at WARN, naming both. Without
/// `key` it is a compile error.
///
/// ```
/// # use cache_memoize::cache_memoize;
/// #[cache_memoize(key = "rate:{currency}", shared_key)]
/// fn exchange_rate(currency: &str) -> u32 {
///     currency.len() as u32
/// }
///
/// assert_eq!(exchange_rate_cache_key("eur").as_str(), "{rate:eur}");
/// assert_eq!(exchange_rate("eur"), 3);
/// cache_memoize::invalidate("rate:eur")?; // the same entry
/// # Ok::<(), cache_memoize::Error>(())
/// ```
///
/// ## `skip(a, b, self)`
///
/// Leaves parameters out of the key: for what does not change the result (a
/// connection, a handle, a logger). Calls differing only in them share one value.
/// A `&mut` parameter (or `&mut self`) must be skipped: on a hit the body does not
/// run, so a change it makes through a key part would be lost; anything else is a
/// compile error on its `&mut`.
///
/// ```
/// # use cache_memoize::cache_memoize;
/// struct Pool;
///
/// #[cache_memoize(key = "user:{id}", skip(pool))]
/// fn user_name(pool: &Pool, id: u32) -> String {
///     format!("user {id}")
/// }
/// # assert_eq!(user_name(&Pool, 1), "user 1");
/// ```
///
/// ## `expire = "10m"`
///
/// How long a stored value lives (default `"30d"`). Durations are checked at compile
/// time: `"250ms"`, `"5s"`, `"1m30s"`, `"1h"`, `"30d"`.
///
/// ```
/// # use cache_memoize::cache_memoize;
/// #[cache_memoize(expire = "5m")]
/// fn rate(currency: &str) -> u32 { currency.len() as u32 }
/// # assert_eq!(rate("eur"), 3);
/// ```
///
/// ## `version = 2`
///
/// A number stored with the value; values stored under another version read as a
/// miss. Bump it when the value's meaning changes but not its Rust type.
///
/// ```
/// # use cache_memoize::cache_memoize;
/// #[cache_memoize(version = 2)]
/// fn score(player: u32) -> u32 { player * 10 }
/// # assert_eq!(score(1), 10);
/// ```
///
/// ## `force_overwrite`
///
/// Always compute and store, replacing what is stored. (To refresh once, for given
/// arguments, wrap a call in `cache_memoize::refresh(|| f(args))` instead.)
///
/// ```
/// # use cache_memoize::cache_memoize;
/// #[cache_memoize(force_overwrite)]
/// fn latest(feed: u32) -> u32 { feed }
/// # assert_eq!(latest(1), 1);
/// ```
///
/// ## `lock` or `lock(timeout = "5s", expire = "30s", retry = "100ms", blocking = false)`
///
/// After a miss, one caller computes under a lock shared through the backend while the
/// others wait and read its result (no stampede). Defaults: expire 30 s, no timeout,
/// retry 250 ms plus jitter, blocking. `retry` is the pause between attempts while a
/// waiter is not subscribed to the lock's release: on Redis, once it is, a waiter
/// pauses until the release or the lock's expiry (checking at least once a second).
/// `lock = true` is an error: write
/// `lock`.
///
/// ```
/// # use cache_memoize::cache_memoize;
/// #[cache_memoize(lock(timeout = "5s", expire = "30s"))]
/// fn report(day: u32) -> String { format!("report {day}") }
/// # assert_eq!(report(1), "report 1");
/// ```
///
/// ## `stale = "1h"`
///
/// Never wait at expiry (stale-while-revalidate): a value is fresh for `expire`, then
/// *stale* for up to `stale` more (the backend keeps it for `expire + stale`). A call
/// that finds it stale returns it at hit cost, and exactly one caller across every
/// process sharing the backend refreshes it, under the value's lock taken without
/// waiting (with or without `lock`); the others return the stale value meanwhile.
/// A refresh that returns `Err`, panics or cannot reach the backend keeps the stale
/// value served (stale-if-error), never past `expire + stale`; after that the value is
/// a miss, as without `stale`. The README's "Freshness" section has the details.
/// `stale` counts from `expire`, so set both: without `expire` a value is fresh for
/// the default 30 days, and the function's first call says so once at WARN.
///
/// Where the refresh runs depends on the parameters:
///
/// - **In the background** when no parameter (receiver included) is a reference or
///   names a lifetime other than `'static`: the refresh runs on a thread of its own (an
///   `async fn`'s, as a task on the caller's Tokio runtime), so even the caller that
///   found the value stale returns it at once. The refresh owns the arguments, so each
///   must be `Send + 'static` (and an `async fn`'s future `Send`): otherwise the compile
///   error is on the parameter, and suggests `refresh = "inline"`.
/// - **Inline** otherwise (`&self`, `&str`, `Cow<'a, str>`), or with `refresh =
///   "inline"`: the caller that found the value stale refreshes it and returns the
///   new value (or the stale one if the refresh fails); every other caller gets the
///   stale value at once.
///
/// ```
/// # use cache_memoize::cache_memoize;
/// #[cache_memoize(key = "rate:{currency}", expire = "1m", stale = "1h")]
/// fn exchange_rate(currency: String) -> u32 {
///     currency.len() as u32 // a remote call; refreshed in the background once stale
/// }
///
/// #[cache_memoize(key = "profile:{user}", expire = "5m", stale = "1h")]
/// fn profile(user: &str) -> String {
///     format!("profile of {user}") // borrowed argument: refreshed inline
/// }
/// # assert_eq!(exchange_rate("eur".to_owned()), 3);
/// # assert_eq!(profile("ann"), "profile of ann");
/// ```
///
/// Memoized iterators do not honour `stale` (nor `beta`, `fail_safe`, `jitter`,
/// `refresh`, `clock`): serving an old sequence while a new one is written would keep
/// the old chunks alive beside the new ones; writing any of them on an iterator is a
/// compile error.
///
/// ## `fail_safe = "30s"`
///
/// After a refresh fails, how long every caller across the fleet serves the stale value
/// before one tries again (default: a tenth of `expire`, between 1 s and 1 min). Needs
/// `stale` (or `beta`).
///
/// ```
/// # use cache_memoize::cache_memoize;
/// #[cache_memoize(expire = "1m", stale = "1h", fail_safe = "30s")]
/// fn quote(symbol: String) -> Result<u32, String> {
///     Ok(symbol.len() as u32) // an Err keeps the stale value for 30 s, then one caller retries
/// }
/// # assert_eq!(quote("ABC".to_owned()), Ok(3));
/// ```
///
/// ## `beta = 1.0`
///
/// Early refresh (`XFetch`, Vattani et al., VLDB 2015): a fresh value is refreshed before
/// it expires, with a probability that rises as expiry nears, scaled by how long the
/// value took to compute and by `beta` (1.0 is the paper's choice; larger refreshes
/// earlier; 0, the default, turns it off; negative is an error). The refresh runs as a
/// stale one does (in the background or inline, by one caller), so callers of a hot key
/// need never see it expire. Works with or without `stale`.
///
/// ```
/// # use cache_memoize::cache_memoize;
/// #[cache_memoize(expire = "10m", beta = 1.0, lock)]
/// fn leaderboard(game: u32) -> Vec<u32> {
///     vec![game; 3]
/// }
/// # assert_eq!(leaderboard(1), [1, 1, 1]);
/// ```
///
/// ## `jitter = "10%"`
///
/// Shortens each stored value's lifetime (its freshness and its TTL alike) by a random
/// fraction of at most this percentage, so values written together do not expire
/// together. From `"0%"` to `"90%"`; default none. It only ever shortens.
///
/// ```
/// # use cache_memoize::cache_memoize;
/// #[cache_memoize(expire = "1h", jitter = "10%")]
/// fn banner(locale: u16) -> String { format!("banner {locale}") } // lives 54 to 60 min
/// # assert_eq!(banner(1), "banner 1");
/// ```
///
/// ## `refresh = "inline"`
///
/// With `stale` or `beta`: refresh in the caller that finds the value stale, even when
/// every argument could move to the background (for arguments that are not `Send`, or
/// to keep refreshes on the caller's thread). `"inline"` is the only value: the
/// background refresh is the default.
///
/// ```
/// # use cache_memoize::cache_memoize;
/// use std::rc::Rc;
///
/// #[cache_memoize(stale = "1h", refresh = "inline", skip(config))]
/// fn render(config: Rc<String>, page: u32) -> String {
///     format!("{config}: page {page}") // `Rc` is not `Send`: refreshed inline
/// }
/// # assert_eq!(render(Rc::new("site".into()), 1), "site: page 1");
/// ```
///
/// ## `clock = path::to::function`
///
/// Reads wall-clock time from the `fn() -> Arc<dyn Clock>` named here instead of the
/// system's (values carry the time they stop being fresh, written by whichever process
/// computed them): for tests that move time instead of sleeping, or for a host whose
/// clock is known to be off.
///
/// ```
/// # use cache_memoize::cache_memoize;
/// use cache_memoize::Clock;
/// use std::sync::Arc;
/// use std::time::{Duration, SystemTime};
///
/// struct TwoMinutesAhead;
/// impl Clock for TwoMinutesAhead {
///     fn now(&self) -> SystemTime { SystemTime::now() + Duration::from_secs(120) }
/// }
/// fn ahead() -> Arc<dyn Clock> { Arc::new(TwoMinutesAhead) }
///
/// #[cache_memoize(expire = "1m", stale = "1h", clock = ahead)]
/// fn tick(n: u32) -> u32 { n }
/// # assert_eq!(tick(1), 1);
/// ```
///
/// ## `cache_none = false`
///
/// For a function returning `Option<T>`: a `None` is returned without being stored, so
/// the next call computes again (a `Some` is stored as usual). A `None` computed by a
/// refresh or a forced call removes the stored value (an absent mark, read as a miss,
/// replaces it): the old `Some` is never served again.
///
/// ```
/// # use cache_memoize::cache_memoize;
/// #[cache_memoize(cache_none = false)]
/// fn find(id: u32) -> Option<String> {
///     (id > 0).then(|| format!("item {id}"))
/// }
/// # assert_eq!(find(0), None);
/// ```
///
/// ## `codec = "msgpack"`
///
/// Writes values with `MessagePack`, a self-describing format, instead of bincode (the
/// default, `"bincode"`). Needed for types bincode writes but cannot read back:
/// `serde_json::Value`, internally tagged enums (`#[serde(tag = "...")]`), `flatten`,
/// `skip_serializing_if`. Without it such values are never read back; the first one
/// computed in a process is reported at WARN with the function's name.
///
/// ```
/// # use cache_memoize::cache_memoize;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// #[serde(tag = "kind")]
/// enum Event { Created { by: String } }
///
/// #[cache_memoize(codec = "msgpack")]
/// fn event(id: u32) -> Event { Event::Created { by: format!("user {id}") } }
/// # let _ = event(1);
/// ```
///
/// ## `large_values = "1MiB"`
///
/// Values whose encoding is larger than this (default 1 MiB; a size with its unit,
/// `"512KiB"`, `"4MB"`, or a number of bytes) are stored in chunks of 512 KiB,
/// zstd-compressed, behind a small manifest under the value's key, so that no single
/// Redis command carries more than one chunk (see
/// [`MemoizeOptions::large_values`](https://docs.rs/cache-memoize/latest/cache_memoize/struct.MemoizeOptions.html#method.large_values)).
/// Not for memoized iterators, which are always chunked.
///
/// ```
/// # use cache_memoize::cache_memoize;
/// #[cache_memoize(large_values = "256KiB")]
/// fn export(rows: u32) -> Vec<u8> { vec![b'x'; rows as usize * 1024] }
/// # assert_eq!(export(300).len(), 300 * 1024);
/// ```
///
/// ## `keep_decoded`
///
/// With a Redis backend that has a [near cache](https://docs.rs/cache-memoize/latest/cache_memoize/struct.NearCache.html),
/// keeps the value decoded beside its near copy, so that a near hit returns a clone of
/// it instead of copying, checking and decoding the bytes again (at 10 KB, a third of
/// the time). The kept value goes whenever its bytes go (another process's write, an
/// invalidation, expiry, a broken invalidation link). The value must be
/// `Clone + Send + Sync + 'static` (the compile error is on `keep_decoded`), and its
/// `Clone` must give what decoding would: plain data, not state shared through
/// `Arc<Mutex<_>>` or interior mutability, which callers would then share. On other
/// backends it changes nothing.
///
/// ```
/// # use cache_memoize::cache_memoize;
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct Page { html: String }
///
/// #[cache_memoize(key = "page:{id}", keep_decoded)]
/// fn page(id: u32) -> Page { Page { html: format!("<p>{id}</p>") } }
/// # let _ = page(1);
/// ```
///
/// ## `batch`
///
/// Memoizes each element of a collection: the function takes the elements (`Vec<K>`,
/// `&[K]`, or any owned `IntoIterator<Item = K> + FromIterator<K>` such as `HashSet<K>`
/// or `BTreeSet<K>`) and returns `HashMap<K, V>` (written with that name; an alias is
/// refused). The collection is the one parameter the `key` template does not name (it
/// needs `key`); the template names the element instead, with a placeholder that is no
/// parameter (`{id}` below). Each element is stored under its own key, rendered as a
/// single call's would be (the function's identity unless `shared_key`, escaping, the
/// other parameters, `{id.field}`, `{id:?}`).
///
/// A call reads every element's key at once (one `MGET` on Redis) and calls the body
/// **once**, with exactly the elements this caller must compute, as the declared type
/// (a `Vec` or set collected from them, or a slice). Elements another caller is
/// computing are waited for and read; with `lock`, each element is computed once across
/// every process. An element the body leaves out of its map is stored as an absence
/// and left out of the returned map (so `cache_none` is refused). Every other option
/// applies per element (`expire`, `lock`, `version`, `codec`, `large_values`, ...); a
/// stale element (`stale`, `beta`) is refreshed in the batch, as `refresh = "inline"`
/// would: the body is given it with the missing ones, and the call returns its new
/// value (one that another caller is refreshing is served stale). `keep_decoded` is
/// refused. `async fn` works the same way. See
/// [`memoize_many`](https://docs.rs/cache-memoize/latest/cache_memoize/fn.memoize_many.html).
///
/// The companions are per element: `<name>_cache_key(.., id)` is one element's key
/// (the element in the collection's place), `<name>_invalidate(.., ids)` and
/// `<name>_invalidate_async(.., ids)` remove each element's value.
///
/// ```
/// use std::collections::HashMap;
/// use cache_memoize::cache_memoize;
///
/// #[cache_memoize(batch, key = "user:{id}", expire = "10m", lock)]
/// fn user_names(ids: Vec<u64>) -> HashMap<u64, String> {
///     // One query for exactly `ids`: the ones not stored yet.
///     ids.into_iter().filter(|id| *id != 0).map(|id| (id, format!("user {id}"))).collect()
/// }
///
/// let names = user_names(vec![1, 2, 0]); // the body is given [0, 1, 2]
/// assert_eq!(names.len(), 2); // 0 is not returned: stored as an absence
/// let names = user_names(vec![2, 3]); // the body is given [3] only
/// assert_eq!(names[&3], "user 3");
/// assert!(user_names_cache_key(3).as_str().ends_with("::user_names|user:3}"));
/// user_names_invalidate(vec![2, 3])?; // the next call computes 2 and 3 again
/// # Ok::<(), cache_memoize::Error>(())
/// ```
///
/// ## `companions = false`
///
/// The attribute also generates `<name>_cache_key(args) -> CacheKey`,
/// `<name>_invalidate(args) -> Result<(), Error>` (it blocks the thread until the
/// backend answers) and `<name>_invalidate_async(args)` (a `Send + 'static` future of
/// the same result, for async code), taking every parameter of the function (skipped
/// ones included). In a trait impl, where they cannot be added, or when you already
/// have a function of that name, turn them off. A method in a trait impl without it is
/// refused with an error whose first line names the fix: "method
/// `in_a_trait_impl_write_cache_memoize_companions_false_for_area` is not a member of
/// trait" (a hidden, unused method every memoized method carries for that purpose).
///
/// ```
/// # use cache_memoize::cache_memoize;
/// trait Shape { fn area(&self) -> u64; }
/// struct Square(u32);
/// # impl std::fmt::Display for Square {
/// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "sq{}", self.0) }
/// # }
///
/// impl Shape for Square {
///     #[cache_memoize(companions = false)]
///     fn area(&self) -> u64 { u64::from(self.0 * self.0) }
/// }
/// # assert_eq!(Square(3).area(), 9);
/// ```
#[proc_macro_attribute]
pub fn cache_memoize(args: TokenStream, item: TokenStream) -> TokenStream {
    let item2: proc_macro2::TokenStream = item.clone().into();
    let function: sig::MaybeItemFn = match syn::parse(item) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new_spanned(
                &item2,
                "#[cache_memoize] applies to functions (`fn` or `async fn`), free or in an `impl` block",
            );
            return with_error(&item2, &error);
        }
    };
    let expanded =
        syn::parse::<attr::MemoizeArgs>(args).and_then(|args| expand::expand(&args, &function));
    match expanded {
        Ok(tokens) => tokens.into(),
        Err(error) => with_error(&function.into_token_stream(), &error),
    }
}

/// The item unchanged, plus the error (tokio-macros' way).
fn with_error(item: &proc_macro2::TokenStream, error: &syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    quote::quote!(#error #item).into()
}
