//! The memoized function as the attribute sees it: its signature analysed (what it
//! returns, its parameters, its generics), its body kept as unparsed tokens.
//!
//! The body is not parsed (tracing-attributes' `MaybeItemFn`): a syntax error in it is
//! reported once, by the compiler, where it is, instead of a second error over the
//! whole function from this attribute.

use proc_macro2::{Group, Span, TokenStream};
use quote::{ToTokens, quote};
use syn::parse::{Parse, ParseStream};
use syn::visit::Visit;
use syn::{
    Attribute, FnArg, GenericArgument, GenericParam, Ident, Pat, PathArguments, ReturnType,
    Signature, Type, TypeParamBound, Visibility,
};

/// A function item whose body is kept as tokens.
pub(crate) struct MaybeItemFn {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) sig: Signature,
    /// The body, braces included, as written.
    pub(crate) body: Group,
}

impl Parse for MaybeItemFn {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let sig = input.parse()?;
        let body: Group = input.parse()?;
        if body.delimiter() != proc_macro2::Delimiter::Brace {
            return Err(syn::Error::new(body.span(), "expected the function's body"));
        }
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the function's body"));
        }
        Ok(Self {
            attrs,
            vis,
            sig,
            body,
        })
    }
}

impl ToTokens for MaybeItemFn {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let Self {
            attrs,
            vis,
            sig,
            body,
        } = self;
        tokens.extend(quote!(#(#attrs)* #vis #sig #body));
    }
}

/// What the function returns, as far as caching goes.
pub(crate) enum Output<'a> {
    /// A value; which part of it is stored is decided by its type in generated code.
    Value(&'a Type),
    /// `impl Iterator<Item = T>`: a memoized iterator of `T`.
    Iter(&'a Type),
}

/// One parameter, which is a key part unless skipped.
pub(crate) struct Param {
    /// Its name: the binding's identifier, or `self`.
    pub(crate) name: String,
    /// The expression reading it: its identifier, or `self`.
    pub(crate) expr: TokenStream,
    /// Where errors about it point.
    pub(crate) span: Span,
    pub(crate) is_self: bool,
    /// Its type has an `impl Trait` (an anonymous type parameter of the function).
    pub(crate) impl_trait: bool,
    /// It is a reference or its type names a lifetime (other than `'static`): it
    /// cannot move to a background refresh.
    pub(crate) borrows: bool,
    /// It is a `&mut` (or `&mut self`): where the `&mut` is written.
    pub(crate) mutable: Option<Span>,
}

/// What a generic function's key adds: one part per type or const parameter.
pub(crate) enum Generic {
    /// `T`: written as `core::any::type_name::<T>()`.
    Type(Ident),
    /// `const N: usize`: written as a key part of `N`.
    Const(Ident),
}

pub(crate) fn output(sig: &Signature) -> syn::Result<Output<'_>> {
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
        Type::Reference(reference) => {
            let owned = match &*reference.elem {
                Type::Path(path) if path.path.is_ident("str") => "`String`".to_owned(),
                Type::Slice(slice) => {
                    format!("`Vec<{}>`", slice.elem.to_token_stream())
                }
                elem => format!("`{}`", elem.to_token_stream()),
            };
            Err(syn::Error::new_spanned(
                ty,
                format!(
                    "#[cache_memoize] returns values read back from the cache, which cannot borrow from anything; return an owned {owned} instead of this reference"
                ),
            ))
        }
        Type::ImplTrait(imp) if is_iterator(&imp.bounds) => match iterator_item(&imp.bounds) {
            Some(item @ Type::ImplTrait(_)) => Err(syn::Error::new_spanned(
                item,
                "#[cache_memoize] stores each item, so it needs the item's concrete type: write it out (`impl Iterator<Item = String>`) instead of `impl Trait`",
            )),
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
        _ => Ok(Output::Value(ty)),
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

pub(crate) fn params(sig: &Signature) -> syn::Result<Vec<Param>> {
    sig.inputs
        .iter()
        .map(|input| match input {
            FnArg::Receiver(receiver) => Ok(Param {
                name: "self".to_owned(),
                expr: receiver.self_token.to_token_stream(),
                span: receiver.self_token.span,
                is_self: true,
                impl_trait: false,
                borrows: receiver.reference.is_some() || borrows(&receiver.ty),
                mutable: match (&receiver.reference, receiver.mutability) {
                    (Some(_), Some(token)) => Some(token.span),
                    // `self: &mut Self` (the type written out).
                    _ => mutable_reference(&receiver.ty),
                },
            }),
            FnArg::Typed(typed) => match &*typed.pat {
                Pat::Ident(binding) if binding.subpat.is_none() => {
                    let ident = &binding.ident;
                    Ok(Param {
                        name: ident.to_string(),
                        expr: quote!(#ident),
                        span: ident.span(),
                        is_self: false,
                        impl_trait: has_impl_trait(&typed.ty),
                        borrows: borrows(&typed.ty),
                        mutable: mutable_reference(&typed.ty),
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

/// Where the `&mut` of a `&mut T` type is written, through the invisible group a
/// macro's `$t:ty` makes and through parentheses.
fn mutable_reference(ty: &Type) -> Option<Span> {
    match ty {
        Type::Reference(reference) => reference.mutability.map(|token| token.span),
        Type::Group(group) => mutable_reference(&group.elem),
        Type::Paren(paren) => mutable_reference(&paren.elem),
        _ => None,
    }
}

fn has_impl_trait(ty: &Type) -> bool {
    struct Finder(bool);
    impl Visit<'_> for Finder {
        fn visit_type_impl_trait(&mut self, _: &syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut finder = Finder(false);
    finder.visit_type(ty);
    finder.0
}

/// Whether `ty` is or holds a reference or names a lifetime, `'static` aside. Function
/// pointers and `Fn(..)` bounds are not looked into: their references are bound there.
fn borrows(ty: &Type) -> bool {
    struct Finder(bool);
    impl Visit<'_> for Finder {
        fn visit_type_reference(&mut self, reference: &syn::TypeReference) {
            match &reference.lifetime {
                Some(lifetime) if lifetime.ident == "static" => self.visit_type(&reference.elem),
                _ => self.0 = true,
            }
        }
        fn visit_lifetime(&mut self, lifetime: &syn::Lifetime) {
            if lifetime.ident != "static" {
                self.0 = true;
            }
        }
        fn visit_type_bare_fn(&mut self, _: &syn::TypeBareFn) {}
        fn visit_parenthesized_generic_arguments(
            &mut self,
            _: &syn::ParenthesizedGenericArguments,
        ) {
        }
    }
    let mut finder = Finder(false);
    finder.visit_type(ty);
    finder.0
}

/// The function's own type and const parameters, in order (lifetimes do not change
/// what it computes).
pub(crate) fn generics(sig: &Signature) -> Vec<Generic> {
    sig.generics
        .params
        .iter()
        .filter_map(|param| match param {
            GenericParam::Type(ty) => Some(Generic::Type(ty.ident.clone())),
            GenericParam::Const(konst) => Some(Generic::Const(konst.ident.clone())),
            GenericParam::Lifetime(_) => None,
        })
        .collect()
}
