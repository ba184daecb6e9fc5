//! Code generation: the memoized function (sync and async side by side, plain and
//! `Result` returns) and its companions `<name>_cache_key` and `<name>_invalidate`.
//!
//! Generated code names only `::cache_memoize::__private::…` and `::core::…`; its
//! locals use `Span::mixed_site()`, so the function's body cannot see them.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, ReturnType, Signature, Type,
    TypeParamBound,
};

use crate::attr::{LockArgs, MemoizeArgs};
use crate::key::{self, Segment};

/// What the function returns, as far as caching goes.
enum Output<'a> {
    /// Any value: stored as is.
    Plain(&'a Type),
    /// `Result<T, E>` (or an alias with `T` first): only `Ok(T)` is stored.
    Result(&'a Type),
    /// `impl Iterator<Item = T>`: a memoized iterator of `T`.
    Iter(&'a Type),
}

impl Output<'_> {
    fn cached(&self) -> &Type {
        match self {
            Output::Plain(ty) | Output::Result(ty) | Output::Iter(ty) => ty,
        }
    }
}

/// A parameter the key may name.
struct Param {
    name: String,
    /// The expression reading it: its identifier, or `self`.
    expr: TokenStream,
    span: Span,
    is_self: bool,
}

/// Rewrites `item` as `args` say.
pub(crate) fn expand(args: &MemoizeArgs, item: &ItemFn) -> syn::Result<TokenStream> {
    let output = output(&item.sig)?;
    let params = params(&item.sig)?;
    let key = key_expr(args, &item.sig, &params)?;
    let memoized = memoized_fn(args, item, &output, &key);
    let companions = companions(item, &params, &key);
    Ok(quote!(#memoized #companions))
}

fn output(sig: &Signature) -> syn::Result<Output<'_>> {
    let ReturnType::Type(_, ty) = &sig.output else {
        return Err(syn::Error::new_spanned(
            &sig.ident,
            "#[cache_memoize] needs a return value to cache; this function returns `()`",
        ));
    };
    match &**ty {
        Type::Tuple(tuple) if tuple.elems.is_empty() => Err(syn::Error::new_spanned(
            ty,
            "#[cache_memoize] needs a return value to cache; `()` has nothing to store",
        )),
        Type::ImplTrait(imp) if is_iterator(&imp.bounds) => match iterator_item(&imp.bounds) {
            Some(item) => Ok(Output::Iter(item)),
            None => Err(syn::Error::new_spanned(
                ty,
                "#[cache_memoize] needs the item type spelled out: `impl Iterator<Item = T>`",
            )),
        },
        Type::ImplTrait(_) => Err(syn::Error::new_spanned(
            ty,
            "#[cache_memoize] stores the return value, so it needs a concrete type, not `impl Trait`",
        )),
        Type::Path(path) => Ok(result_ok_type(path).map_or(Output::Plain(ty), Output::Result)),
        _ => Ok(Output::Plain(ty)),
    }
}

type Bounds = syn::punctuated::Punctuated<TypeParamBound, syn::Token![+]>;

fn is_iterator(bounds: &Bounds) -> bool {
    bounds.iter().any(|bound| {
        matches!(bound, TypeParamBound::Trait(t)
            if t.path.segments.last().is_some_and(|s| s.ident == "Iterator"))
    })
}

/// `T` of `impl Iterator<Item = T>`.
fn iterator_item(bounds: &Bounds) -> Option<&Type> {
    bounds.iter().find_map(|bound| {
        let TypeParamBound::Trait(bound) = bound else {
            return None;
        };
        let last = bound.path.segments.last()?;
        let PathArguments::AngleBracketed(args) = &last.arguments else {
            return None;
        };
        args.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(assoc) if assoc.ident == "Item" => Some(&assoc.ty),
            _ => None,
        })
    })
}

/// `T` of `Result<T, …>` (by the path's last segment, so aliases like `io::Result<T>`
/// count).
fn result_ok_type(path: &syn::TypePath) -> Option<&Type> {
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(ok) => Some(ok),
        _ => None,
    }
}

fn params(sig: &Signature) -> syn::Result<Vec<Param>> {
    sig.inputs
        .iter()
        .map(|input| match input {
            FnArg::Receiver(receiver) => Ok(Param {
                name: "self".to_owned(),
                expr: quote!(self),
                span: receiver.self_token.span,
                is_self: true,
            }),
            FnArg::Typed(typed) => match &*typed.pat {
                Pat::Ident(binding) if binding.subpat.is_none() => {
                    let ident = &binding.ident;
                    Ok(Param {
                        name: ident.to_string(),
                        expr: quote!(#ident),
                        span: ident.span(),
                        is_self: false,
                    })
                }
                pattern => Err(syn::Error::new_spanned(
                    pattern,
                    "#[cache_memoize] builds keys from parameter names: bind this parameter to a name and destructure it in the body",
                )),
            },
        })
        .collect()
}

/// The expression building the key passed to the runtime (before prefix and digest).
fn key_expr(args: &MemoizeArgs, sig: &Signature, params: &[Param]) -> syn::Result<TokenStream> {
    let part = |param: &Param| {
        let expr = &param.expr;
        quote_spanned!(param.span=> ::cache_memoize::__private::key_part(&#expr))
    };
    let (format, values): (String, Vec<TokenStream>) = match &args.key {
        Some(template) => {
            let names: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
            let mut format = String::new();
            let mut values = Vec::new();
            for segment in key::parse(template, &names)? {
                match segment {
                    Segment::Literal(text) => {
                        format.push_str(&text.replace('{', "{{").replace('}', "}}"));
                    }
                    Segment::Param(name) => {
                        format.push_str("{}");
                        values.extend(params.iter().filter(|p| p.name == name).map(part));
                    }
                }
            }
            (format, values)
        }
        None => {
            let name = sig.ident.to_string();
            let owner = if params.iter().any(|p| p.is_self) {
                quote!(::core::any::type_name::<Self>())
            } else {
                quote!(::core::module_path!())
            };
            let mut format = format!("{{}}::{name}");
            let mut values = vec![owner];
            for param in params.iter().filter(|p| !p.is_self) {
                format.push_str(":{}");
                values.push(part(param));
            }
            (format, values)
        }
    };
    Ok(quote!(
        ::cache_memoize::__private::format!(#format #(, #values)*)
    ))
}

fn millis(ms: u64) -> TokenStream {
    quote!(::cache_memoize::__private::millis(#ms))
}

fn options_expr(args: &MemoizeArgs) -> TokenStream {
    let mut opts = quote!(::cache_memoize::__private::MemoizeOptions::new());
    if let Some(ms) = args.expire {
        let expire = millis(ms);
        opts.extend(quote!(.expire(#expire)));
    }
    if let Some(version) = args.version {
        opts.extend(quote!(.version(#version)));
    }
    if args.force_overwrite {
        opts.extend(quote!(.force_overwrite(true)));
    }
    if let Some(lock) = &args.lock {
        let lock = lock_expr(lock);
        opts.extend(quote!(.lock(#lock)));
    }
    opts
}

fn lock_expr(lock: &LockArgs) -> TokenStream {
    let var = Ident::new("__cache_memoize_lock", Span::mixed_site());
    let mut sets = Vec::new();
    if let Some(ms) = lock.expire {
        let expire = millis(ms);
        sets.push(quote!(#var.expire = #expire;));
    }
    if let Some(ms) = lock.timeout {
        let timeout = millis(ms);
        sets.push(quote!(#var.timeout = ::core::option::Option::Some(#timeout);));
    }
    if let Some(ms) = lock.retry {
        let retry = millis(ms);
        sets.push(quote!(#var.retry = #retry;));
    }
    if let Some(blocking) = lock.blocking {
        sets.push(quote!(#var.blocking = #blocking;));
    }
    let defaults = quote!(::cache_memoize::__private::LockOptions::default());
    if sets.is_empty() {
        return defaults;
    }
    quote!({
        let mut #var = #defaults;
        #(#sets)*
        #var
    })
}

fn memoized_fn(
    args: &MemoizeArgs,
    item: &ItemFn,
    output: &Output<'_>,
    key: &TokenStream,
) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = item;
    let key_var = Ident::new("__cache_memoize_key", Span::mixed_site());
    let opts_var = Ident::new("__cache_memoize_opts", Span::mixed_site());
    let value_var = Ident::new("__cache_memoize_value", Span::mixed_site());
    let opts = options_expr(args);
    let ReturnType::Type(_, ret) = &sig.output else {
        unreachable!("output() rejected functions without a return type")
    };
    let cached = output.cached();
    let span = cached.span();
    let check = quote_spanned!(span=> ::cache_memoize::__private::assert_cacheable::<#cached>(););
    let call = match (sig.asyncness.is_some(), output) {
        (false, Output::Plain(_)) => quote_spanned!(span=>
            ::cache_memoize::__private::memoize(&#key_var, &#opts_var, move || -> #ret #block)),
        (false, Output::Result(_)) => quote_spanned!(span=>
            ::cache_memoize::__private::try_memoize(&#key_var, &#opts_var, move || -> #ret #block)),
        (true, Output::Plain(_)) => quote_spanned!(span=>
            ::cache_memoize::__private::memoize_async(&#key_var, &#opts_var, move || async move {
                let #value_var: #ret = #block;
                #value_var
            }).await),
        (true, Output::Result(_)) => quote_spanned!(span=>
            ::cache_memoize::__private::try_memoize_async(&#key_var, &#opts_var, move || async move {
                let #value_var: #ret = #block;
                #value_var
            }).await),
        (false, Output::Iter(_)) => quote_spanned!(span=>
            ::cache_memoize::__private::memoize_iter(&#key_var, &#opts_var, move || #block)),
        (true, Output::Iter(_)) => quote_spanned!(span=>
            ::cache_memoize::__private::memoize_iter_async(&#key_var, &#opts_var, move || async move #block).await),
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            #check
            let #key_var: ::cache_memoize::__private::String = #key;
            let #opts_var = #opts;
            #call
        }
    }
}

fn companions(item: &ItemFn, params: &[Param], key: &TokenStream) -> TokenStream {
    let name = &item.sig.ident;
    let vis = &item.vis;
    let key_sig = companion_sig(
        &item.sig,
        format_ident!("{name}_cache_key"),
        &quote!(::cache_memoize::__private::CacheKey),
    );
    let invalidate_sig = companion_sig(
        &item.sig,
        format_ident!("{name}_invalidate"),
        &quote!(::core::result::Result<(), ::cache_memoize::__private::Error>),
    );
    let used: Vec<&TokenStream> = params
        .iter()
        .filter(|p| !p.is_self)
        .map(|p| &p.expr)
        .collect();
    let key_doc =
        format!(" The cache key under which `{name}` stores its result for these arguments.");
    let invalidate_doc = format!(
        " Removes the result `{name}` stored for these arguments; the next call computes it again."
    );
    quote! {
        #[doc = #key_doc]
        #[allow(dead_code)]
        #vis #key_sig {
            let _ = (#(&#used,)*);
            ::cache_memoize::__private::make_cache_key(&#key)
        }

        #[doc = #invalidate_doc]
        #[allow(dead_code)]
        #vis #invalidate_sig {
            let _ = (#(&#used,)*);
            ::cache_memoize::__private::invalidate(&#key)
        }
    }
}

/// The function's signature, renamed, sync, returning `output`, taking its receiver
/// by reference and its parameters without `mut`.
fn companion_sig(sig: &Signature, ident: Ident, output: &TokenStream) -> TokenStream {
    let mut sig = sig.clone();
    sig.ident = ident;
    sig.asyncness = None;
    sig.constness = None;
    for input in &mut sig.inputs {
        match input {
            FnArg::Receiver(receiver) if receiver.colon_token.is_none() => {
                *input = if receiver.reference.is_some() && receiver.mutability.is_some() {
                    syn::parse_quote!(&mut self)
                } else {
                    syn::parse_quote!(&self)
                };
            }
            FnArg::Receiver(_) => {}
            FnArg::Typed(typed) => {
                if let Pat::Ident(binding) = &mut *typed.pat {
                    binding.mutability = None;
                    binding.by_ref = None;
                }
            }
        }
    }
    sig.output = syn::parse_quote!(-> #output);
    quote!(#sig)
}
