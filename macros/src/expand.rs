//! Code generation: the memoized function (sync and async side by side, values and
//! iterators), its key, and its companions `<name>_cache_key`, `<name>_invalidate` and
//! `<name>_invalidate_async`.
//!
//! Generated code names only `::cache_memoize::__private::…` and `::core::…`; its
//! locals use `Span::mixed_site()`, so the function's body cannot see them. What the
//! macro cannot see (is an argument `Display`? is the return type a `Result` under
//! another name?) is decided by the compiler through traits in `__private`.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, Ident, Pat, Signature};

use crate::attr::{CodecArg, LockArgs, MemoizeArgs};
use crate::freshness::FreshnessArgs;
use crate::key::{self, Placeholder, Segment};
use crate::sig::{self, Generic, MaybeItemFn, Output, Param};

/// Rewrites `item` as `args` say.
pub(crate) fn expand(args: &MemoizeArgs, item: &MaybeItemFn) -> syn::Result<TokenStream> {
    if let Some(span) = args.batch {
        return crate::batch::expand(args, item, span);
    }
    let output = sig::output(&item.sig)?;
    let params = sig::params(&item.sig)?;
    check_skips(args, &params)?;
    check_options(args, &output)?;
    let key = key_expr(args, &item.sig, &params)?;
    let tags = tags_option(args, &item.sig, &params)?;
    let memoized = memoized_fn(args, item, &output, &params, &key, &tags);
    let companions = if args.companions.unwrap_or(true) {
        companions(item, args, &params, &key)
    } else {
        TokenStream::new()
    };
    Ok(quote!(#memoized #companions))
}

pub(crate) fn listed(params: &[Param]) -> String {
    if params.is_empty() {
        return "the function has no parameters".to_owned();
    }
    let names: Vec<String> = params.iter().map(|p| format!("`{}`", p.name)).collect();
    format!("parameters: {}", names.join(", "))
}

/// Every skipped name is a parameter, and every `&mut` parameter is skipped: on a hit
/// the body does not run, so what it would have changed through a key part is not.
pub(crate) fn check_skips(args: &MemoizeArgs, params: &[Param]) -> syn::Result<()> {
    for param in params {
        let Some(span) = param.mutable else { continue };
        if !args.skip.iter().any(|skipped| *skipped == param.name) {
            let name = &param.name;
            return Err(syn::Error::new(
                span,
                format!(
                    "`{name}` is a `&mut`: on a hit the body does not run, so its changes to `{name}` would be lost; take it by `&` or by value and return what changes, or, for a handle such as a connection, leave it out of the key with `skip({name})`"
                ),
            ));
        }
    }
    for skipped in &args.skip {
        if !params.iter().any(|p| *skipped == p.name) {
            return Err(syn::Error::new(
                skipped.span(),
                format!(
                    "`skip({skipped})`: the function has no parameter `{skipped}` ({})",
                    listed(params)
                ),
            ));
        }
    }
    Ok(())
}

fn check_options(args: &MemoizeArgs, output: &Output<'_>) -> syn::Result<()> {
    if let (Output::Iter(_), Some(cache_none)) = (output, &args.cache_none) {
        return Err(syn::Error::new_spanned(
            cache_none,
            "`cache_none` applies to functions returning `Option<T>`, not to iterators; remove it",
        ));
    }
    if let (Output::Iter(_), Some((CodecArg::MessagePack, span))) = (output, &args.codec) {
        return Err(syn::Error::new(
            *span,
            "a memoized iterator's chunks are always bincode; remove `codec`",
        ));
    }
    if let (Output::Iter(_), Some((_, span))) = (output, args.large_values) {
        return Err(syn::Error::new(
            span,
            "a memoized iterator is always stored in chunks (sized by `MemoizeOptions::chunk_size`); `large_values` applies to returned values: remove it",
        ));
    }
    if let (Output::Iter(_), Some(span)) = (output, args.keep_decoded) {
        return Err(syn::Error::new(
            span,
            "`keep_decoded` keeps a returned value decoded; a memoized iterator's items are read as they stream: remove it",
        ));
    }
    args.fresh.check(output)
}

/// One piece of a key as it is built.
enum Piece {
    /// Text taken as written.
    Literal(String),
    /// An argument (or type) written as a key part: never contains `:`.
    Part(TokenStream),
    /// Text computed but not escaped (the function's identity).
    Raw(TokenStream),
}

/// The expression building the key passed to the runtime (before prefix and digest):
/// the function's identity, `|` and every parameter (or the template), unless
/// `shared_key` makes the template the whole key.
pub(crate) fn key_expr(
    args: &MemoizeArgs,
    sig: &Signature,
    params: &[Param],
) -> syn::Result<TokenStream> {
    let is_skipped = |p: &Param| args.skip.iter().any(|s| *s == p.name);
    let pieces = match (&args.key, args.shared_key) {
        (Some(template), Some(_)) => {
            let mut pieces = template_pieces(args, template, params)?;
            pieces.extend(generic_pieces(sig, params));
            pieces
        }
        (Some(template), None) => {
            let mut pieces = vec![identity(sig), Piece::Literal("|".to_owned())];
            pieces.extend(template_pieces(args, template, params)?);
            pieces
        }
        (None, _) => {
            let mut pieces = vec![identity(sig)];
            let mut separator = "|";
            for param in params.iter().filter(|p| !is_skipped(p)) {
                pieces.push(Piece::Literal(separator.to_owned()));
                pieces.push(Piece::Part(part(param, &[], false)));
                separator = ":";
            }
            pieces
        }
    };
    Ok(build(terminated(pieces)))
}

/// The `.tags([..])` option: each `tags` template rendered at the call as a key
/// template is (placeholders name parameters; a tag need not name them all); empty
/// without `tags`.
pub(crate) fn tags_option(
    args: &MemoizeArgs,
    sig: &Signature,
    params: &[Param],
) -> syn::Result<TokenStream> {
    if args.tags.is_none() {
        return Ok(TokenStream::new());
    }
    let tags = tag_exprs(args, params)?;
    let function = function_tag(sig);
    Ok(quote!(.tags([#(#tags,)* #function])))
}

/// Each `tags` template as the expression rendering it (a `String`) from `params`.
pub(crate) fn tag_exprs(args: &MemoizeArgs, params: &[Param]) -> syn::Result<Vec<TokenStream>> {
    let Some(templates) = &args.tags else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
    let mut tags = Vec::with_capacity(templates.len());
    for template in templates {
        // The template's errors speak of a tag template, not a key's.
        let segments = key::parse(template, &names).map_err(|err| {
            syn::Error::new(
                err.span(),
                err.to_string().replace("key template", "tag template"),
            )
        })?;
        tags.push(build(terminated(pieces_of(segments, params))));
    }
    Ok(tags)
}

/// The function's own tag (`<name>_clear`), named in its body as its key is.
pub(crate) fn function_tag(sig: &Signature) -> TokenStream {
    let identity = identity_expr(sig);
    quote!(::cache_memoize::__private::function_tag(&#identity))
}

/// The function's identity (`__private::fn_identity`): the path `type_name` gives a
/// closure in the body it is evaluated in (the function's, or a companion's), with
/// every generic argument in force: the `impl`'s, the trait's `Self`, the function's
/// own and its `impl Trait` arguments' types.
fn identity(sig: &Signature) -> Piece {
    Piece::Raw(identity_expr(sig))
}

/// The expression of the function's identity, evaluated in the body it is in.
fn identity_expr(sig: &Signature) -> TokenStream {
    // The companions are `{name}_cache_key`, `{name}_invalidate`,
    // `{name}_invalidate_async`, `{name}_clear` and `{name}_clear_async`.
    let stem = format!("::{}_", sig.ident.unraw());
    quote!(::cache_memoize::__private::fn_identity(
        ::cache_memoize::__private::type_name_of_val(&|| ()),
        #stem,
    ))
}

/// A shared key's generic arguments: the function's type parameters and `impl Trait`
/// arguments (by type name) and const parameters, each after a `:`. (An identity has
/// them already.)
fn generic_pieces(sig: &Signature, params: &[Param]) -> Vec<Piece> {
    let mut pieces = Vec::new();
    for generic in sig::generics(sig) {
        pieces.push(Piece::Literal(":".to_owned()));
        pieces.push(Piece::Part(match generic {
            Generic::Type(ty) => quote_spanned!(ty.span()=>
                ::cache_memoize::__private::type_key_part(::core::any::type_name::<#ty>())),
            Generic::Const(konst) => kind_part(&quote!(#konst), konst.span()),
        }));
    }
    for param in params.iter().filter(|p| p.impl_trait) {
        let expr = &param.expr;
        pieces.push(Piece::Literal(":".to_owned()));
        pieces.push(Piece::Part(quote_spanned!(param.span=>
            ::cache_memoize::__private::type_key_part(
                ::cache_memoize::__private::type_name_of_val(&#expr)))));
    }
    pieces
}

/// The pieces of a `key` template, after checking that every parameter is in it or
/// skipped.
fn template_pieces(
    args: &MemoizeArgs,
    template: &syn::LitStr,
    params: &[Param],
) -> syn::Result<Vec<Piece>> {
    let names: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
    let segments = key::parse(template, &names)?;
    let in_template = |name: &str| {
        segments
            .iter()
            .any(|s| matches!(s, Segment::Param(p) if p.param == name))
    };
    let mut errors: Option<syn::Error> = None;
    let mut report = |error: syn::Error| match &mut errors {
        Some(errors) => errors.combine(error),
        None => errors = Some(error),
    };
    for skipped in &args.skip {
        if in_template(&skipped.to_string()) {
            report(syn::Error::new(
                skipped.span(),
                format!(
                    "`{skipped}` is skipped, but the key template names it; remove it from `skip(..)` or from the template"
                ),
            ));
        }
    }
    for param in params {
        if in_template(&param.name) || args.skip.iter().any(|s| *s == param.name) {
            continue;
        }
        report(syn::Error::new(param.span, missing_message(param)));
    }
    if let Some(errors) = errors {
        return Err(errors);
    }
    Ok(pieces_of(segments, params))
}

/// A parsed template's pieces: its literal text, and each placeholder's key part
/// (`key::parse` checked that each placeholder names a parameter).
fn pieces_of(segments: Vec<Segment>, params: &[Param]) -> Vec<Piece> {
    segments
        .into_iter()
        .filter_map(|segment| match segment {
            Segment::Literal(text) => Some(Piece::Literal(text)),
            Segment::Param(Placeholder {
                param,
                fields,
                debug,
            }) => params
                .iter()
                .find(|p| p.name == param)
                .map(|param| Piece::Part(part(param, &fields, debug))),
        })
        .collect()
}

pub(crate) fn missing_message(param: &Param) -> String {
    let name = &param.name;
    if param.is_self {
        "the receiver `self` is not in the key template, so two receivers would share their results: name it (`{self}`, or a field such as `{self.id}`), or add `skip(self)` if the result does not depend on it".to_owned()
    } else {
        format!(
            "parameter `{name}` is not in the key template, so calls differing only in `{name}` would share one result: name it (`{{{name}}}`, or `{{{name}:?}}` for its `Debug` output), or add `skip({name})` if it does not change the result"
        )
    }
}

/// A parameter (or a field of it) as a key part.
fn part(param: &Param, fields: &[String], debug: bool) -> TokenStream {
    let span = param.span;
    let mut value = param.expr.clone();
    for field in fields {
        let member: syn::Member = match field.parse::<u32>() {
            Ok(index) => syn::Member::Unnamed(syn::Index { index, span }),
            Err(_) => syn::Member::Named(Ident::new(field, span)),
        };
        value = quote_spanned!(span=> #value.#member);
    }
    if debug {
        quote_spanned!(span=> ::cache_memoize::__private::debug_key_part(&#value))
    } else {
        kind_part(&value, span)
    }
}

/// `value` written by the first key-part kind its type has (see `__private::KeyArg`).
fn kind_part(value: &TokenStream, span: Span) -> TokenStream {
    quote_spanned!(span=>
        (&&&::cache_memoize::__private::KeyArg(&#value)).__cache_memoize_kind().key_part(&#value))
}

/// Ends each part that is followed by anything but a literal starting with `:` with a
/// `:`: parts never contain `:`, so `{a}{b}` or `{a}x{b}` cannot read two ways.
fn terminated(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::with_capacity(pieces.len());
    let mut open_part = false;
    for piece in pieces {
        let separated = matches!(&piece, Piece::Literal(text) if text.starts_with(':'));
        if open_part && !separated {
            out.push(Piece::Literal(":".to_owned()));
        }
        open_part = matches!(piece, Piece::Part(_));
        out.push(piece);
    }
    out
}

fn build(pieces: Vec<Piece>) -> TokenStream {
    let key = Ident::new("__cache_memoize_key", Span::mixed_site());
    let part = Ident::new("__cache_memoize_part", Span::mixed_site());
    let mut pushes = Vec::new();
    let mut literal = String::new();
    for piece in pieces {
        match piece {
            Piece::Literal(text) => literal.push_str(&text),
            Piece::Part(expr) | Piece::Raw(expr) => {
                if !literal.is_empty() {
                    let text = std::mem::take(&mut literal);
                    pushes.push(quote!(#key.push_str(#text);));
                }
                // The borrows choose the key part's kind (autoref specialization).
                pushes.push(quote!(
                    #[allow(clippy::needless_borrow)]
                    let #part = #expr;
                    #key.push_str(&#part);
                ));
            }
        }
    }
    if !literal.is_empty() {
        pushes.push(quote!(#key.push_str(#literal);));
    }
    quote!({
        #[allow(unused_imports)]
        use ::cache_memoize::__private::{
            ViaDisplay as _, ViaSerialize as _, ViaStructure as _,
        };
        // Room for most keys at once: growing it would copy it again.
        let mut #key = ::cache_memoize::__private::String::with_capacity(64);
        #(#pushes)*
        #key
    })
}

fn millis(ms: u64) -> TokenStream {
    quote!(::cache_memoize::__private::millis(#ms))
}

pub(crate) fn options_expr(args: &MemoizeArgs) -> TokenStream {
    let mut opts = quote!(::cache_memoize::__private::MemoizeOptions::new());
    if let Some(ms) = args.expire {
        let expire = millis(ms);
        opts.extend(quote!(.expire(#expire)));
    }
    if let Some(version) = args.version {
        opts.extend(quote!(.version(#version)));
    }
    if let Some((bytes, _)) = args.large_values {
        let bytes = proc_macro2::Literal::u64_unsuffixed(bytes);
        opts.extend(quote!(.large_values(#bytes)));
    }
    if args.force_overwrite {
        opts.extend(quote!(.force_overwrite(true)));
    }
    if let Some(lock) = &args.lock {
        let lock = lock_expr(lock);
        opts.extend(quote!(.lock(#lock)));
    }
    if let Some((CodecArg::MessagePack, _)) = args.codec {
        opts.extend(quote!(.codec(::cache_memoize::__private::Codec::MessagePack)));
    }
    opts.extend(freshness_options(&args.fresh));
    opts
}

/// The `MemoizeOptions` builder calls of the freshness options.
fn freshness_options(fresh: &FreshnessArgs) -> TokenStream {
    let mut opts = TokenStream::new();
    if let Some(stale) = &fresh.stale {
        let stale = millis(stale.value);
        opts.extend(quote!(.stale(#stale)));
    }
    if let Some(fail_safe) = &fresh.fail_safe {
        let fail_safe = millis(fail_safe.value);
        opts.extend(quote!(.fail_safe(#fail_safe)));
    }
    if let Some(beta) = &fresh.beta {
        let beta = Literal::f64_suffixed(beta.value);
        opts.extend(quote!(.beta(#beta)));
    }
    if let Some(jitter) = &fresh.jitter {
        let jitter = Literal::f64_suffixed(jitter.value);
        opts.extend(quote!(.jitter(#jitter)));
    }
    if let Some(clock) = &fresh.clock {
        // Spanned on the path: a function of another type is reported there.
        opts.extend(quote_spanned!(clock.span()=>
            .clock(::cache_memoize::__private::clock_from(#clock))));
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

/// Said once at the first call of a function with `stale` and no `expire`.
const STALE_WITHOUT_EXPIRE: &str = "`stale` is set without `expire`: values stay fresh for the default 30 days and are served stale only after that; set `expire` to the freshness you mean (`expire = \"5m\", stale = \"1h\"`)";

fn memoized_fn(
    args: &MemoizeArgs,
    item: &MaybeItemFn,
    output: &Output<'_>,
    params: &[Param],
    key: &TokenStream,
    tags: &TokenStream,
) -> TokenStream {
    let MaybeItemFn {
        attrs,
        vis,
        sig,
        body,
    } = item;
    let key_var = Ident::new("__cache_memoize_key", Span::mixed_site());
    let opts_var = Ident::new("__cache_memoize_opts", Span::mixed_site());
    let mut opts = options_expr(args);
    let stored = match output {
        Output::Iter(item) => quote!(#item),
        Output::Value(ret) => quote!(#ret),
    };
    opts.extend(name_option(args, sig, &stored));
    opts.extend(tags.clone());
    let call = match output {
        Output::Iter(item_ty) => iter_call(sig, item_ty, body, &key_var, &opts_var),
        Output::Value(ret) => {
            let detached = args.fresh.detached(params);
            let call = value_call(args, sig, ret, body, detached, &key_var, &opts_var);
            if detached {
                let checks = params.iter().map(|param| {
                    let expr = &param.expr;
                    quote_spanned!(param.span=>
                        ::cache_memoize::__private::assert_refreshable_in_background(&#expr);)
                });
                quote!(#(#checks)* #call)
            } else {
                call
            }
        }
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            let #key_var: ::cache_memoize::__private::String = #key;
            let #opts_var = #opts;
            #call
        }
    }
}

/// The `.name(..)` option: the function's identity (its path, a method's type
/// included), without generic arguments, names its events and metrics; made at the
/// first call. `stored`: the type stored under its keys.
pub(crate) fn name_option(
    args: &MemoizeArgs,
    sig: &Signature,
    stored: &TokenStream,
) -> TokenStream {
    // The function's identity (its path, a method's type included), without generic
    // arguments, names its events and metrics: made at the first call.
    let stem = format!("::{}_", sig.ident.unraw());
    let name_var = Ident::new("__CACHE_MEMOIZE_NAME", Span::mixed_site());
    // `stale` counts from `expire`: without it, from the default 30 days. Valid, and
    // said once at the first call (a compile error would refuse working code).
    let made = if args.fresh.stale.is_some() && args.expire.is_none() {
        quote!(::cache_memoize::__private::FnName::noting(#STALE_WITHOUT_EXPIRE))
    } else {
        quote!(::cache_memoize::__private::FnName::new())
    };
    let closure = quote!(::cache_memoize::__private::type_name_of_val(&|| ()));
    // Two `shared_key` functions of one template storing two types: said at the first
    // call of the second (a thrash otherwise seen only as misses).
    let get = match (args.shared_key, &args.key) {
        (Some(_), Some(template)) => {
            quote!(get_sharing(#closure, #stem, #template, ::core::any::type_name::<#stored>()))
        }
        _ => quote!(get(#closure, #stem)),
    };
    quote!(.name({
        static #name_var: ::cache_memoize::__private::FnName = #made;
        #name_var.#get
    }))
}

fn iter_call(
    sig: &Signature,
    item_ty: &syn::Type,
    body: &proc_macro2::Group,
    key_var: &Ident,
    opts_var: &Ident,
) -> TokenStream {
    let span = item_ty.span();
    let check = quote_spanned!(span=> ::cache_memoize::__private::assert_cacheable::<#item_ty>(););
    let call = if sig.asyncness.is_some() {
        quote_spanned!(span=>
            ::cache_memoize::__private::memoize_iter_async(&#key_var, &#opts_var, move || async move #body).await)
    } else {
        quote_spanned!(span=>
            ::cache_memoize::__private::memoize_iter(&#key_var, &#opts_var, move || #body))
    };
    quote!(#check #call)
}

/// A value-returning function: the body's value is split by the return type's outcome
/// (a `Result`'s `Err`, or a `None` under `cache_none = false`, is not stored).
/// `detached`: a stale value is revalidated in the background (`__private::Detached`),
/// by a closure that owns the arguments. One runtime entry, `__private::call` (or
/// `call_async`), described by a typed `__private::Entry`.
fn value_call(
    args: &MemoizeArgs,
    sig: &Signature,
    ret: &syn::Type,
    body: &proc_macro2::Group,
    detached: bool,
    key_var: &Ident,
    opts_var: &Ident,
) -> TokenStream {
    let outcome_var = Ident::new("__cache_memoize_outcome", Span::mixed_site());
    let value_var = Ident::new("__cache_memoize_value", Span::mixed_site());
    let span = ret.span();
    let name = sig.ident.to_string();
    let function = quote!(::core::concat!(::core::module_path!(), "::", #name));
    let is_async = sig.asyncness.is_some();
    // The body's `return`s need a closure (or async block) of their own, returning `#ret`.
    // Spanned on the return type: a future that cannot move to a detached
    // revalidation is reported there.
    let compute = if is_async {
        quote_spanned!(span=> async move {
            let #value_var: #ret = async move #body.await;
            #value_var
        })
    } else {
        quote!({
            #[allow(clippy::redundant_closure_call)]
            let #value_var: #ret = (move || -> #ret #body)();
            #value_var
        })
    };
    // Spanned on `keep_decoded`: a value that cannot be kept is reported there.
    let share = match args.keep_decoded {
        Some(keep) => quote_spanned!(keep=>
            ::core::option::Option::Some(::cache_memoize::__private::Share::new())),
        // Spanned on the return type, as the rest of the call: a type that cannot be
        // stored is reported there.
        None => quote_spanned!(span=> ::core::option::Option::None),
    };
    // How the return value is stored: an `Option` under `cache_none = false`, else a
    // `Result` (under any name) or a plain value, as the compiler sees the type.
    let outcome = if args.cache_none.as_ref().is_some_and(|c| !c.value) {
        quote_spanned!(span=> ::cache_memoize::__private::OptionOutcome)
    } else {
        quote! {{
            #[allow(unused_imports)]
            use ::cache_memoize::__private::{ViaPlain as _, ViaResult as _};
            // The borrows choose the outcome (autoref specialization).
            #[allow(clippy::needless_borrow)]
            let #outcome_var = (&&::cache_memoize::__private::OutcomeOf::<#ret>::new())
                .__cache_memoize_outcome();
            #outcome_var
        }}
    };
    let mode = if detached {
        quote_spanned!(span=> ::cache_memoize::__private::Detached)
    } else {
        quote_spanned!(span=> ::cache_memoize::__private::Inline)
    };
    let entry = quote_spanned!(span=>
        ::cache_memoize::__private::Entry::new(#outcome, #mode).share(#share).checked(#function));
    if is_async {
        quote_spanned!(span=>
            ::cache_memoize::__private::call_async(&#key_var, &#opts_var, #entry, move || #compute).await)
    } else {
        quote_spanned!(span=>
            ::cache_memoize::__private::call(&#key_var, &#opts_var, #entry, move || #compute))
    }
}

fn companions(
    item: &MaybeItemFn,
    args: &MemoizeArgs,
    params: &[Param],
    key: &TokenStream,
) -> TokenStream {
    let name = &item.sig.ident;
    let vis = &item.vis;
    let clear = clear_companions(item, args, params);
    // Skipped parameters stay in the signature (callers pass what the function takes)
    // but are not bound: the key does not read them.
    let unread: Vec<&str> = params
        .iter()
        .filter(|p| !p.impl_trait && args.skip.iter().any(|s| *s == p.name))
        .map(|p| p.name.as_str())
        .collect();
    let key_sig = companion_sig(
        &item.sig,
        format_ident!("{name}_cache_key", span = name.span()),
        &quote!(::cache_memoize::__private::CacheKey),
        &unread,
    );
    let invalidate_sig = companion_sig(
        &item.sig,
        format_ident!("{name}_invalidate", span = name.span()),
        &quote!(::core::result::Result<(), ::cache_memoize::__private::Error>),
        &unread,
    );
    let invalidate_async_sig = companion_sig(
        &item.sig,
        format_ident!("{name}_invalidate_async", span = name.span()),
        &quote!(
            ::cache_memoize::__private::BoxFuture<
                'static,
                ::core::result::Result<(), ::cache_memoize::__private::Error>,
            >
        ),
        &unread,
    );
    let key_doc =
        format!(" The cache key under which `{name}` stores its result for these arguments.");
    let invalidate_doc = format!(
        " Removes the result `{name}` stored for these arguments; the next call computes it again.\n\n \
         Blocks the calling thread until the backend answers: in async code, \
         `{name}_invalidate_async(..).await`."
    );
    let invalidate_async_doc = format!(
        " Removes the result `{name}` stored for these arguments, without blocking the thread: \
         the key is rendered at the call, and the returned future (`Send + 'static`) removes it."
    );
    // A trait impl cannot take the companions, and rustc's error there ("method
    // `f_invalidate` is not a member of trait") does not name the fix. For a method,
    // this hidden one comes first and its name does: its error reads "method
    // `in_a_trait_impl_write_cache_memoize_companions_false_for_f` is not a member of
    // trait". Elsewhere it is an unused method (taking `&self`, so a trait that
    // declares it stays dyn compatible).
    let hint = if item.sig.receiver().is_some() {
        let hint = format_ident!(
            "in_a_trait_impl_write_cache_memoize_companions_false_for_{}",
            name.unraw(),
            span = name.span()
        );
        quote_spanned! {name.span()=>
            #[doc(hidden)]
            #[allow(dead_code, clippy::unused_self)]
            fn #hint(&self) {}
        }
    } else {
        TokenStream::new()
    };
    // Spanned on the function's name: a clash (a trait impl, an item of the same
    // name) is reported there.
    quote_spanned! {name.span()=>
        #hint

        #[doc = #key_doc]
        #[allow(
            dead_code,
            clippy::needless_pass_by_value,
            clippy::unused_self,
            clippy::extra_unused_type_parameters
        )]
        #vis #key_sig {
            ::cache_memoize::__private::make_cache_key(&#key)
        }

        #[doc = #invalidate_doc]
        #[allow(
            dead_code,
            clippy::needless_pass_by_value,
            clippy::unused_self,
            clippy::extra_unused_type_parameters
        )]
        #vis #invalidate_sig {
            ::cache_memoize::__private::invalidate(&#key)
        }

        #[doc = #invalidate_async_doc]
        #[allow(
            dead_code,
            clippy::needless_pass_by_value,
            clippy::unused_self,
            clippy::extra_unused_type_parameters
        )]
        #vis #invalidate_async_sig {
            ::cache_memoize::__private::invalidate_owned_async(#key)
        }

        #clear
    }
}

/// With `tags`: `<name>_clear()` and `<name>_clear_async()`, which invalidate the
/// function's own tag (every value it stored). They take the receiver, if any, and
/// the function's generics, but no argument; not made for a function with an
/// `impl Trait` argument (whose type is part of its identity, and unnamed).
pub(crate) fn clear_companions(
    item: &MaybeItemFn,
    args: &MemoizeArgs,
    params: &[Param],
) -> TokenStream {
    if args.tags.is_none() || params.iter().any(|p| p.impl_trait) {
        return TokenStream::new();
    }
    let name = &item.sig.ident;
    let vis = &item.vis;
    let identity = identity_expr(&item.sig);
    let sig = |suffix: &str, output: TokenStream| {
        let mut sig = item.sig.clone();
        sig.ident = format_ident!("{name}_{suffix}", span = name.span());
        sig.asyncness = None;
        sig.constness = None;
        sig.inputs = sig
            .inputs
            .into_iter()
            .filter_map(|input| match input {
                FnArg::Receiver(receiver) if receiver.colon_token.is_none() => {
                    Some(syn::parse_quote!(&self))
                }
                FnArg::Receiver(receiver) => Some(FnArg::Receiver(receiver)),
                FnArg::Typed(_) => None,
            })
            .collect();
        sig.output = syn::parse_quote!(-> #output);
        sig
    };
    let error = quote!(::cache_memoize::__private::Error);
    let clear_sig = sig("clear", quote!(::core::result::Result<(), #error>));
    let clear_async_sig = sig(
        "clear_async",
        quote!(::cache_memoize::__private::BoxFuture<'static, ::core::result::Result<(), #error>>),
    );
    let clear_doc = format!(
        " Invalidates every result `{name}` stored (its own tag): one write, however many \
         there are. Blocks the calling thread until the backend answers: in async code, \
         `{name}_clear_async().await`."
    );
    let clear_async_doc =
        format!(" Invalidates every result `{name}` stored, without blocking the thread.");
    quote_spanned! {name.span()=>
        #[doc = #clear_doc]
        #[allow(dead_code, clippy::unused_self, clippy::extra_unused_type_parameters)]
        #vis #clear_sig {
            ::cache_memoize::__private::clear(&#identity)
        }

        #[doc = #clear_async_doc]
        #[allow(dead_code, clippy::unused_self, clippy::extra_unused_type_parameters)]
        #vis #clear_async_sig {
            ::cache_memoize::__private::clear_owned_async(&#identity)
        }
    }
}

/// The function's signature, renamed, sync, returning `output`, taking its receiver
/// by reference, its parameters without `mut`, and the `unread` ones as `_`.
pub(crate) fn companion_sig(
    sig: &Signature,
    ident: Ident,
    output: &TokenStream,
    unread: &[&str],
) -> TokenStream {
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
                    if unread.iter().any(|name| binding.ident == name) {
                        *typed.pat = syn::parse_quote!(_);
                    } else {
                        binding.mutability = None;
                        binding.by_ref = None;
                    }
                }
            }
        }
    }
    sig.output = syn::parse_quote!(-> #output);
    quote!(#sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(pieces: Vec<Piece>) -> String {
        terminated(pieces)
            .iter()
            .map(|piece| match piece {
                Piece::Literal(text) => text.clone(),
                Piece::Part(_) => "P".to_owned(),
                Piece::Raw(_) => "R".to_owned(),
            })
            .collect()
    }

    fn lit(text: &str) -> Piece {
        Piece::Literal(text.to_owned())
    }

    fn part() -> Piece {
        Piece::Part(quote!(x))
    }

    #[test]
    fn parts_are_terminated_unless_a_colon_follows_or_nothing_does() {
        assert_eq!(shape(vec![lit("adj:"), part(), part()]), "adj:P:P");
        assert_eq!(shape(vec![part(), lit("x"), part()]), "P:xP");
        assert_eq!(shape(vec![part(), lit(":page:"), part()]), "P:page:P");
        assert_eq!(shape(vec![lit("user:"), part()]), "user:P");
        assert_eq!(shape(vec![part(), lit(" "), part()]), "P: P");
    }
}
