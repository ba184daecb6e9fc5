//! `#[cache_memoize(batch, key = "user:{id}")]`: a function of a collection returning a
//! map, memoized per element through `__private::memoize_many` (`_async`).
//!
//! The collection is the one parameter the key template does not name; the template
//! names the element instead (a placeholder that is no parameter). Each element's key
//! is the key a single call would have with the element in the collection's place, so
//! every other option applies per element. The body is called with exactly the
//! elements this caller computes, as the declared type.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, Ident, LitStr, Pat, PatIdent, PathArguments, Type};

use crate::attr::MemoizeArgs;
use crate::expand::{
    check_skips, clear_companions, companion_sig, function_tag, key_expr, listed, missing_message,
    name_option, options_expr, tag_exprs,
};
use crate::key::{self, Segment};
use crate::sig::{self, MaybeItemFn, Output, Param};

/// How the body receives the elements it computes.
enum Collection {
    /// `&[K]`: the slice of them (`K` as written).
    Slice(Type),
    /// An owned `IntoIterator<Item = K> + FromIterator<K>` (`Vec<K>`, a set, ...):
    /// one collected from them.
    Owned(Type),
}

/// The batch parameter: where it is in the signature, its binding and how it is passed.
struct BatchParam {
    index: usize,
    binding: PatIdent,
    collection: Collection,
}

/// `HashMap<K, V>`'s `K` and `V`.
struct MapTypes<'a> {
    key: &'a Type,
    value: &'a Type,
    ret: &'a Type,
}

/// Rewrites the batch function `item` as `args` say (`batch` written at `batch`).
pub(crate) fn expand(
    args: &MemoizeArgs,
    item: &MaybeItemFn,
    batch: Span,
) -> syn::Result<TokenStream> {
    // `attr.rs` refuses `batch` without `key`.
    let Some(template) = &args.key else {
        return Err(syn::Error::new(batch, "`batch` needs a `key` template"));
    };
    check_options(args)?;
    let output = sig::output(&item.sig)?;
    let map = map_types(&output, &item.sig)?;
    args.fresh.check(&output)?;
    let params = sig::params(&item.sig)?;
    let element = element(template, &params)?;
    let batch_param = batch_param(args, template, item, &params, &element, batch)?;
    // The key is a single call's, with the element in the collection's place.
    let mut key_params: Vec<Param> = Vec::with_capacity(params.len());
    for (index, param) in params.into_iter().enumerate() {
        if index == batch_param.index {
            key_params.push(element_param(&element));
        } else {
            key_params.push(param);
        }
    }
    check_skips(args, &key_params)?;
    let key = key_expr(args, &item.sig, &key_params)?;
    // Each tag template rendered per element, as the key is.
    let tags = args
        .tags
        .is_some()
        .then(|| tag_exprs(args, &key_params))
        .transpose()?;
    let function = batch_fn(
        args,
        item,
        &map,
        &batch_param,
        &element,
        &key,
        tags.as_deref(),
    );
    let companions = if args.companions.unwrap_or(true) {
        let mut companions =
            companions(args, item, &map, &batch_param, &element, &key_params, &key);
        companions.extend(clear_companions(item, args, &key_params));
        companions
    } else {
        TokenStream::new()
    };
    Ok(quote!(#function #companions))
}

/// The options that have no meaning per element.
fn check_options(args: &MemoizeArgs) -> syn::Result<()> {
    if let Some(cache_none) = &args.cache_none {
        return Err(syn::Error::new_spanned(
            cache_none,
            "with `batch`, absences are always cached: an element the body leaves out of its map is stored as absent (and left out of the returned map) until it expires or is invalidated; remove `cache_none`",
        ));
    }
    if let Some(span) = args.keep_decoded {
        return Err(syn::Error::new(
            span,
            "`keep_decoded` does not apply to `batch`: a batch's elements are read with one `get_many`, not through the near tier's decoded values; remove it",
        ));
    }
    Ok(())
}

const MAP_HINT: &str = "with `batch`, the function returns `HashMap<K, V>` (std's `HashMap`, written with that name: a type alias is not recognised), mapping each element it was given to its value";

/// The return type's `K` and `V`: the last segment of its path is `HashMap`, with two
/// type arguments.
fn map_types<'a>(output: &Output<'a>, sig: &syn::Signature) -> syn::Result<MapTypes<'a>> {
    let ret = match output {
        Output::Value(ret) => *ret,
        Output::Iter(_) => {
            return Err(syn::Error::new_spanned(
                &sig.output,
                format!("a memoized iterator cannot be a batch: {MAP_HINT}"),
            ));
        }
    };
    let not_a_map = || syn::Error::new_spanned(ret, MAP_HINT);
    let Type::Path(path) = ret else {
        return Err(not_a_map());
    };
    let last = path.path.segments.last().ok_or_else(not_a_map)?;
    if last.ident != "HashMap" {
        return Err(not_a_map());
    }
    let PathArguments::AngleBracketed(generics) = &last.arguments else {
        return Err(not_a_map());
    };
    let types: Vec<&Type> = generics
        .args
        .iter()
        .filter_map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect();
    match types.as_slice() {
        [key, value] => Ok(MapTypes { key, value, ret }),
        _ => Err(not_a_map()),
    }
}

/// The element: the one name the template's placeholders start from that is no
/// parameter, as an identifier spanned on the template.
fn element(template: &LitStr, params: &[Param]) -> syn::Result<Ident> {
    let segments = key::parse_unchecked(template)?;
    let mut names: Vec<&str> = Vec::new();
    for segment in &segments {
        if let Segment::Param(placeholder) = segment {
            let name = placeholder.param.as_str();
            if !params.iter().any(|p| p.name == name) && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    match names.as_slice() {
        [name] => syn::parse_str::<Ident>(name)
            .map(|ident| Ident::new(&ident.to_string(), template.span()))
            .map_err(|_| {
                syn::Error::new_spanned(
                    template,
                    format!(
                        "`{{{name}}}`: the element's name must be an identifier, not a keyword"
                    ),
                )
            }),
        [] => Err(syn::Error::new_spanned(
            template,
            format!(
                "with `batch`, the key template names the element with a placeholder that is no parameter, as `{{id}}` in `key = \"user:{{id}}\"` for `fn users(ids: Vec<u64>)`; this template names only parameters ({})",
                listed(params)
            ),
        )),
        [first, second, ..] => Err(syn::Error::new_spanned(
            template,
            format!(
                "with `batch`, the key template names one element, but `{{{first}}}` and `{{{second}}}` both name no parameter: keep one element placeholder (its fields are `{{{first}.field}}`) and make the others parameters ({})",
                listed(params)
            ),
        )),
    }
}

/// The element as a parameter of its key.
fn element_param(element: &Ident) -> Param {
    Param {
        name: element.to_string(),
        expr: quote!(#element),
        span: element.span(),
        is_self: false,
        impl_trait: false,
        borrows: false,
        mutable: None,
    }
}

/// The one parameter, receiver aside, that the template does not name and that is not
/// skipped; its type says how the body receives the elements.
fn batch_param(
    args: &MemoizeArgs,
    template: &LitStr,
    item: &MaybeItemFn,
    params: &[Param],
    element: &Ident,
    batch: Span,
) -> syn::Result<BatchParam> {
    // The template parsed: `element` found every name it starts from.
    let mut names = params.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    names.push(element.to_string());
    let segments = key::parse(template, &names)?;
    let in_template = |name: &str| {
        segments
            .iter()
            .any(|s| matches!(s, Segment::Param(p) if p.param == name))
    };
    let candidates: Vec<usize> = params
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.is_self && !in_template(&p.name))
        .filter(|(_, p)| !args.skip.iter().any(|s| *s == p.name))
        .map(|(index, _)| index)
        .collect();
    let index = match candidates.as_slice() {
        [index] => *index,
        [] => {
            return Err(syn::Error::new(
                batch,
                format!(
                    "`batch` memoizes each element of a collection parameter (`Vec<K>`, `&[K]`, a set) that the key template does not name, but every parameter is in the template or skipped ({}); take the collection as a parameter and name its element in the template (`{{{element}}}`), not the collection",
                    listed(params)
                ),
            ));
        }
        [first, second, ..] => {
            let (first, second) = (&params[*first], &params[*second]);
            return Err(syn::Error::new(
                second.span,
                format!(
                    "with `batch`, the collection is the one parameter the key template does not name, but `{}` and `{}` are both left out: {}",
                    first.name,
                    second.name,
                    missing_message(second)
                ),
            ));
        }
    };
    let Some(FnArg::Typed(typed)) = item.sig.inputs.iter().nth(index) else {
        return Err(syn::Error::new(
            batch,
            "`batch` found no collection parameter",
        ));
    };
    let Pat::Ident(binding) = &*typed.pat else {
        return Err(syn::Error::new_spanned(
            &typed.pat,
            "bind the batch parameter to a name",
        ));
    };
    Ok(BatchParam {
        index,
        binding: binding.clone(),
        collection: collection(&typed.ty, element)?,
    })
}

/// How the batch parameter's type is given the elements: `&[K]`, or an owned path type.
fn collection(ty: &Type, element: &Ident) -> syn::Result<Collection> {
    let refused = || {
        syn::Error::new_spanned(
            ty,
            format!(
                "the batch parameter is a collection of the elements (`{{{element}}}`): `Vec<K>`, `&[K]` or another owned collection (`HashSet<K>`, `BTreeSet<K>`: `IntoIterator<Item = K> + FromIterator<K>`); the body is given the elements it must compute as this type"
            ),
        )
    };
    match ty {
        Type::Group(group) => collection(&group.elem, element),
        Type::Paren(paren) => collection(&paren.elem, element),
        Type::Reference(reference) if reference.mutability.is_none() => match &*reference.elem {
            Type::Slice(slice) => Ok(Collection::Slice((*slice.elem).clone())),
            _ => Err(refused()),
        },
        Type::Path(_) if !has_impl_trait(ty) => Ok(Collection::Owned(ty.clone())),
        _ => Err(refused()),
    }
}

fn has_impl_trait(ty: &Type) -> bool {
    quote!(#ty).into_iter().any(|token| match token {
        proc_macro2::TokenTree::Ident(ident) => ident == "impl",
        _ => false,
    })
}

/// The elements of the batch parameter `ids`, owned.
/// Spanned on the parameter's type: a type that is no collection is reported there.
fn elements(batch: &BatchParam) -> TokenStream {
    let ids = &batch.binding.ident;
    match &batch.collection {
        Collection::Slice(elem) => quote_spanned!(elem.span()=> ::core::iter::Iterator::cloned(
            ::core::iter::IntoIterator::into_iter(#ids)
        )),
        Collection::Owned(ty) => quote_spanned!(ty.span()=>
            ::cache_memoize::__private::batch_elements::<#ty>(#ids)),
    }
}

/// The function's signature with the batch parameter bound without `mut` (the body's
/// binding, inside the loader, keeps it).
fn outer_sig(item: &MaybeItemFn, batch: &BatchParam) -> syn::Signature {
    let mut sig = item.sig.clone();
    if let Some(FnArg::Typed(typed)) = sig.inputs.iter_mut().nth(batch.index) {
        if let Pat::Ident(binding) = &mut *typed.pat {
            binding.mutability = None;
        }
    }
    sig
}

fn batch_fn(
    args: &MemoizeArgs,
    item: &MaybeItemFn,
    map: &MapTypes<'_>,
    batch: &BatchParam,
    element: &Ident,
    key: &TokenStream,
    tags: Option<&[TokenStream]>,
) -> TokenStream {
    let MaybeItemFn {
        attrs, vis, body, ..
    } = item;
    let sig = outer_sig(item, batch);
    let keys_var = Ident::new("__cache_memoize_keys", Span::mixed_site());
    let element_key = Ident::new("__cache_memoize_key", Span::mixed_site());
    let opts_var = Ident::new("__cache_memoize_opts", Span::mixed_site());
    let missing = Ident::new("__cache_memoize_missing", Span::mixed_site());
    let value_var = Ident::new("__cache_memoize_value", Span::mixed_site());
    let value = map.value;
    let ret = map.ret;
    let function_tag = function_tag(&item.sig);
    let mut opts = options_expr(args);
    opts.extend(name_option(
        args,
        &item.sig,
        &quote!(::core::option::Option<#value>),
    ));
    // With `tags`: the function's tag in the options (every element has it), each
    // element's own rendered with its key.
    let (rendered, memoize, memoize_async) = match tags {
        Some(tags) => {
            opts.extend(quote!(.tags([#function_tag])));
            let element_tags = quote!(::cache_memoize::__private::tag_list([#(#tags,)*]));
            (
                quote!((#element_key, #element_tags, #element)),
                "memoize_batch_tagged",
                "memoize_batch_tagged_async",
            )
        }
        None => (
            quote!((#element_key, #element)),
            "memoize_batch",
            "memoize_batch_async",
        ),
    };
    let elements = elements(batch);
    let binding = &batch.binding;
    let is_async = item.sig.asyncness.is_some();
    // The body's binding of the elements it computes, from `missing` (a `&[K]`, or an
    // owned `Vec<K>` when async).
    let given = match (&batch.collection, is_async) {
        (Collection::Slice(elem), false) => quote!(let #binding: &[#elem] = #missing;),
        (Collection::Slice(elem), true) => quote!(let #binding: &[#elem] = &#missing;),
        (Collection::Owned(ty), false) => quote_spanned!(ty.span()=>
            let #binding: #ty = ::cache_memoize::__private::batch_collect::<#ty>(
                ::core::iter::Iterator::cloned(::core::iter::IntoIterator::into_iter(#missing)));
        ),
        (Collection::Owned(ty), true) => quote_spanned!(ty.span()=>
            let #binding: #ty = ::cache_memoize::__private::batch_collect::<#ty>(#missing);
        ),
    };
    // Spanned on the return type: a map of other types, or a value that cannot be
    // stored, is reported there.
    let span = ret.span();
    let (memoize, memoize_async) = (Ident::new(memoize, span), Ident::new(memoize_async, span));
    let call = if is_async {
        quote_spanned!(span=>
            ::cache_memoize::__private::#memoize_async(#keys_var, &#opts_var, move |#missing| async move {
                #given
                let #value_var: #ret = async move #body.await;
                #value_var
            }).await)
    } else {
        quote_spanned!(span=>
        ::cache_memoize::__private::#memoize(#keys_var, &#opts_var, move |#missing| -> #ret {
            #given
            #body
        }))
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            let #opts_var = #opts;
            let #keys_var = ::cache_memoize::__private::render_keys(#elements, |#element| {
                let #element_key: ::cache_memoize::__private::String = #key;
                #rendered
            });
            #call
        }
    }
}

/// `<name>_cache_key(.., element)`, `<name>_invalidate(.., ids)` and
/// `<name>_invalidate_async(.., ids)`.
fn companions(
    args: &MemoizeArgs,
    item: &MaybeItemFn,
    map: &MapTypes<'_>,
    batch: &BatchParam,
    element: &Ident,
    key_params: &[Param],
    key: &TokenStream,
) -> TokenStream {
    let name = &item.sig.ident;
    let vis = &item.vis;
    let unread: Vec<&str> = key_params
        .iter()
        .filter(|p| !p.impl_trait && args.skip.iter().any(|s| *s == p.name))
        .map(|p| p.name.as_str())
        .collect();
    // `<name>_cache_key` takes one element in the collection's place.
    let mut element_sig = item.sig.clone();
    if let Some(input) = element_sig.inputs.iter_mut().nth(batch.index) {
        let key_ty = map.key;
        *input = syn::parse_quote!(#element: #key_ty);
    }
    let key_sig = companion_sig(
        &element_sig,
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
    let elements = elements(batch);
    let keys = quote!(::cache_memoize::__private::render_keys(#elements, |#element| #key));
    let key_doc = format!(
        " The cache key under which `{name}` stores the value of one element, `{element}`."
    );
    let invalidate_doc = format!(
        " Removes the values `{name}` stored for each of these elements; the next call computes them again.\n\n \
         Blocks the calling thread until the backend answers: in async code, \
         `{name}_invalidate_async(..).await`."
    );
    let invalidate_async_doc = format!(
        " Removes the values `{name}` stored for each of these elements, without blocking the thread: \
         the keys are rendered at the call, and the returned future (`Send + 'static`) removes them."
    );
    quote_spanned! {name.span()=>
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
            ::cache_memoize::__private::invalidate_each(#keys)
        }

        #[doc = #invalidate_async_doc]
        #[allow(
            dead_code,
            clippy::needless_pass_by_value,
            clippy::unused_self,
            clippy::extra_unused_type_parameters
        )]
        #vis #invalidate_async_sig {
            ::cache_memoize::__private::invalidate_each_owned_async(#keys)
        }
    }
}
