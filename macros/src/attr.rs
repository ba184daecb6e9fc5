//! The attribute's arguments: `MemoizeArgs` and the nested `LockArgs`, parsed with
//! `syn`. Each mistake is an error on the offending token that lists what is valid.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{LitBool, LitInt, LitStr, Token, parenthesized};

use crate::duration;

mod kw {
    syn::custom_keyword!(key);
    syn::custom_keyword!(expire);
    syn::custom_keyword!(version);
    syn::custom_keyword!(force_overwrite);
    syn::custom_keyword!(lock);
    syn::custom_keyword!(timeout);
    syn::custom_keyword!(retry);
    syn::custom_keyword!(blocking);
}

const OPTIONS: &str = "`key`, `expire`, `version`, `force_overwrite`, `lock`";
const LOCK_OPTIONS: &str = "`timeout`, `expire`, `retry`, `blocking`";

/// A duration option: milliseconds.
pub(crate) type Millis = u64;

/// `#[cache_memoize(...)]`'s arguments.
#[derive(Default)]
pub(crate) struct MemoizeArgs {
    pub(crate) key: Option<LitStr>,
    pub(crate) expire: Option<Millis>,
    pub(crate) version: Option<u32>,
    pub(crate) force_overwrite: bool,
    pub(crate) lock: Option<LockArgs>,
}

/// `lock` or `lock(...)`'s arguments; `None` fields keep the runtime's defaults.
#[derive(Default)]
pub(crate) struct LockArgs {
    pub(crate) timeout: Option<Millis>,
    pub(crate) expire: Option<Millis>,
    pub(crate) retry: Option<Millis>,
    pub(crate) blocking: Option<bool>,
}

/// Rejects a repeated option, on the repeat.
fn once<T>(slot: &mut Option<T>, value: T, span: Span, name: &str) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(span, format!("duplicate option `{name}`")));
    }
    *slot = Some(value);
    Ok(())
}

fn duration_value(input: ParseStream<'_>) -> syn::Result<Millis> {
    input.parse::<Token![=]>()?;
    duration::parse(&input.parse::<LitStr>()?)
}

impl Parse for MemoizeArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Self::default();
        let mut force_seen = None;
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            let span = input.span();
            if lookahead.peek(kw::key) {
                input.parse::<kw::key>()?;
                input.parse::<Token![=]>()?;
                once(&mut args.key, input.parse()?, span, "key")?;
            } else if lookahead.peek(kw::expire) {
                input.parse::<kw::expire>()?;
                once(&mut args.expire, duration_value(input)?, span, "expire")?;
            } else if lookahead.peek(kw::version) {
                input.parse::<kw::version>()?;
                input.parse::<Token![=]>()?;
                let literal: LitInt = input.parse()?;
                let version = literal.base10_parse::<u32>().map_err(|_| {
                    syn::Error::new_spanned(
                        &literal,
                        "`version` must be an integer from 0 to 4294967295",
                    )
                })?;
                once(&mut args.version, version, span, "version")?;
            } else if lookahead.peek(kw::force_overwrite) {
                input.parse::<kw::force_overwrite>()?;
                once(&mut force_seen, (), span, "force_overwrite")?;
                args.force_overwrite = true;
            } else if lookahead.peek(kw::lock) {
                input.parse::<kw::lock>()?;
                let lock = if input.peek(syn::token::Paren) {
                    let content;
                    parenthesized!(content in input);
                    content.parse()?
                } else {
                    LockArgs::default()
                };
                once(&mut args.lock, lock, span, "lock")?;
            } else {
                return Err(unknown(input, OPTIONS, lookahead));
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

impl Parse for LockArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Self::default();
        let mut timeout_span = None;
        let mut non_blocking_span = None;
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            let span = input.span();
            if lookahead.peek(kw::timeout) {
                input.parse::<kw::timeout>()?;
                once(&mut args.timeout, duration_value(input)?, span, "timeout")?;
                timeout_span = Some(span);
            } else if lookahead.peek(kw::expire) {
                input.parse::<kw::expire>()?;
                once(&mut args.expire, duration_value(input)?, span, "expire")?;
            } else if lookahead.peek(kw::retry) {
                input.parse::<kw::retry>()?;
                once(&mut args.retry, duration_value(input)?, span, "retry")?;
            } else if lookahead.peek(kw::blocking) {
                input.parse::<kw::blocking>()?;
                input.parse::<Token![=]>()?;
                let value: LitBool = input.parse()?;
                if !value.value {
                    non_blocking_span = Some(value.span());
                }
                once(&mut args.blocking, value.value, span, "blocking")?;
            } else {
                return Err(unknown(input, LOCK_OPTIONS, lookahead));
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        if let (Some(timeout), Some(_)) = (timeout_span, non_blocking_span) {
            return Err(syn::Error::new(
                timeout,
                "`timeout` has no effect with `blocking = false`: a non-blocking lock never waits; remove one of them",
            ));
        }
        Ok(args)
    }
}

/// The error for a token that is no option: names it and lists the valid ones.
fn unknown(
    input: ParseStream<'_>,
    valid: &str,
    lookahead: syn::parse::Lookahead1<'_>,
) -> syn::Error {
    match input.parse::<syn::Ident>() {
        Ok(ident) => syn::Error::new(
            ident.span(),
            format!("unknown option `{ident}`; expected one of {valid}"),
        ),
        Err(_) => {
            let err = lookahead.error();
            syn::Error::new(err.span(), format!("expected one of {valid}"))
        }
    }
}
