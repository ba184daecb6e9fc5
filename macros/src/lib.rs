//! The `#[cache_memoize]` attribute of the [`cache-memoize`](https://docs.rs/cache-memoize)
//! crate. Depend on `cache-memoize`, which re-exports it; this crate is not used directly.

use proc_macro::TokenStream;

/// Memoizes a function in the shared cache backend. See the `cache-memoize` crate.
#[proc_macro_attribute]
pub fn cache_memoize(_args: TokenStream, item: TokenStream) -> TokenStream {
    item
}
