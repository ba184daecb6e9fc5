//! The `#[cache_memoize]` attribute of the [`cache-memoize`](https://docs.rs/cache-memoize)
//! crate. Depend on `cache-memoize`, which re-exports it; this crate is not used directly.
//!
//! `attr.rs` parses the arguments (with `duration.rs` and `key.rs`), `expand.rs`
//! generates the code. On an error the function is emitted unchanged beside the error,
//! so one mistake yields one error and the rest of the crate still type-checks.

mod attr;
mod duration;
mod expand;
mod key;
mod sig;

use proc_macro::TokenStream;
use quote::ToTokens;

/// Memoizes a function in the shared cache backend; see the `cache-memoize` crate's
/// documentation for the options and the generated companions.
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
