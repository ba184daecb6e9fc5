//! The attribute's arguments: `MemoizeArgs` and the nested `LockArgs`, parsed with
//! `syn`. Each mistake is an error on the offending token that lists what is valid.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Ident, LitBool, LitInt, LitStr, Token, parenthesized};

use crate::duration;
use crate::freshness::{self, FreshnessArgs, Set};

mod kw {
    syn::custom_keyword!(batch);
    syn::custom_keyword!(key);
    syn::custom_keyword!(shared_key);
    syn::custom_keyword!(expire);
    syn::custom_keyword!(version);
    syn::custom_keyword!(force_overwrite);
    syn::custom_keyword!(lock);
    syn::custom_keyword!(timeout);
    syn::custom_keyword!(retry);
    syn::custom_keyword!(blocking);
    syn::custom_keyword!(skip);
    syn::custom_keyword!(companions);
    syn::custom_keyword!(keep_decoded);
    syn::custom_keyword!(cache_none);
    syn::custom_keyword!(codec);
    syn::custom_keyword!(large_values);
    syn::custom_keyword!(stale);
    syn::custom_keyword!(fail_safe);
    syn::custom_keyword!(beta);
    syn::custom_keyword!(jitter);
    syn::custom_keyword!(refresh);
    syn::custom_keyword!(clock);
    syn::custom_keyword!(tags);
}

const OPTIONS: &str = "`batch`, `key`, `shared_key`, `skip`, `expire`, `version`, `force_overwrite`, `lock`, `stale`, `fail_safe`, `beta`, `jitter`, `refresh`, `clock`, `cache_none`, `codec`, `large_values`, `companions`, `keep_decoded`, `tags`";
const CODECS: &str = "`\"bincode\"` (the default) or `\"msgpack\"` (self-describing)";

/// The codec named by `codec = "..."`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodecArg {
    Bincode,
    MessagePack,
}
const LOCK_OPTIONS: &str = "`timeout`, `expire`, `retry`, `blocking`";

/// A duration option: milliseconds.
pub(crate) type Millis = u64;

/// `#[cache_memoize(...)]`'s arguments.
#[derive(Default)]
pub(crate) struct MemoizeArgs {
    /// `batch`: where it was written (the function memoizes each element of a
    /// collection parameter, returning a map).
    pub(crate) batch: Option<Span>,
    pub(crate) key: Option<LitStr>,
    /// `shared_key`: where it was written (the template is the whole key, without the
    /// function's identity, so other functions may share it).
    pub(crate) shared_key: Option<Span>,
    pub(crate) expire: Option<Millis>,
    pub(crate) version: Option<u32>,
    pub(crate) force_overwrite: bool,
    pub(crate) lock: Option<LockArgs>,
    /// Parameters left out of the key (`self` among them, as an identifier).
    pub(crate) skip: Vec<Ident>,
    /// `cache_none = false`: a `None` result is returned, not stored.
    pub(crate) cache_none: Option<LitBool>,
    pub(crate) codec: Option<(CodecArg, Span)>,
    /// `large_values`: the size in bytes over which values are stored in chunks, and
    /// where it was written.
    pub(crate) large_values: Option<(u64, Span)>,
    /// `tags = ["user:{id}", ...]`: templates of the value's tags, over the parameters.
    pub(crate) tags: Option<Vec<LitStr>>,
    /// `companions = false`: no `<name>_cache_key` / `<name>_invalidate`.
    pub(crate) companions: Option<bool>,
    /// `keep_decoded`: where it was written (hits may clone a value decoded once).
    pub(crate) keep_decoded: Option<Span>,
    /// `stale`, `fail_safe`, `beta`, `jitter`, `refresh`, `clock`.
    pub(crate) fresh: FreshnessArgs,
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

/// `= ["template", ...]` after `tags`.
fn tags_value(input: ParseStream<'_>) -> syn::Result<Vec<LitStr>> {
    input.parse::<Token![=]>()?;
    if !input.peek(syn::token::Bracket) {
        return Err(input.error(
            "`tags` is a list of templates: write `tags = [\"user:{id}\", \"tenant:{t}\"]`",
        ));
    }
    let content;
    syn::bracketed!(content in input);
    let list = content.parse_terminated(syn::parse::ParseBuffer::parse::<LitStr>, Token![,])?;
    Ok(list.into_iter().collect())
}

/// Rejects a value after a bare flag (`flag = ..`), with `message`.
fn no_value(input: ParseStream<'_>, message: &str) -> syn::Result<()> {
    if input.peek(Token![=]) {
        return Err(input.error(message));
    }
    Ok(())
}

fn bool_value(input: ParseStream<'_>) -> syn::Result<bool> {
    input.parse::<Token![=]>()?;
    Ok(input.parse::<LitBool>()?.value)
}

/// A size: a string with its unit (`"1MiB"`, `"512KiB"`, `"4MB"`, `"100B"`), or an
/// integer of bytes.
fn size_value(input: ParseStream<'_>) -> syn::Result<u64> {
    const HINT: &str = "a size is a string with its unit, such as \"1MiB\", \"512KiB\", \"4MB\" or \"100B\", or a number of bytes";
    input.parse::<Token![=]>()?;
    if input.peek(LitInt) {
        let literal: LitInt = input.parse()?;
        return literal
            .base10_parse::<u64>()
            .map_err(|_| syn::Error::new_spanned(&literal, HINT));
    }
    let literal: LitStr = input
        .parse()
        .map_err(|err| syn::Error::new(err.span(), HINT))?;
    let text = literal.value();
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u64 = match unit.trim() {
        "B" | "" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return Err(syn::Error::new_spanned(&literal, HINT)),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| syn::Error::new_spanned(&literal, HINT))
}

fn codec_value(input: ParseStream<'_>) -> syn::Result<CodecArg> {
    input.parse::<Token![=]>()?;
    let name: LitStr = input.parse()?;
    match name.value().as_str() {
        "bincode" => Ok(CodecArg::Bincode),
        "msgpack" | "messagepack" => Ok(CodecArg::MessagePack),
        other => Err(syn::Error::new_spanned(
            &name,
            format!("unknown codec `{other}`; expected {CODECS}"),
        )),
    }
}

/// `skip(a, b, self)`.
fn skip_list(input: ParseStream<'_>) -> syn::Result<Vec<Ident>> {
    let content;
    parenthesized!(content in input);
    let names = Punctuated::<Ident, Token![,]>::parse_terminated_with(&content, Ident::parse_any)?;
    let mut seen: Vec<Ident> = Vec::new();
    for name in names {
        if seen.contains(&name) {
            return Err(syn::Error::new(
                name.span(),
                format!("`{name}` is already skipped"),
            ));
        }
        seen.push(name);
    }
    if seen.is_empty() {
        return Err(content.error(
            "`skip()` names no parameter; list the parameters to leave out of the key, as in `skip(conn, self)`",
        ));
    }
    Ok(seen)
}

fn duration_value(input: ParseStream<'_>) -> syn::Result<Millis> {
    input.parse::<Token![=]>()?;
    duration::parse(&duration_text(input)?)
}

fn lock_expire_value(input: ParseStream<'_>) -> syn::Result<Millis> {
    input.parse::<Token![=]>()?;
    duration::parse_lock_expire(&duration_text(input)?)
}

/// A duration's string; a bare number is an error that shows it with a unit.
fn duration_text(input: ParseStream<'_>) -> syn::Result<LitStr> {
    if input.peek(LitInt) {
        let number: LitInt = input.parse()?;
        return Err(syn::Error::new(
            number.span(),
            format!(
                "a duration is a string with its unit: write \"{}s\" for seconds (or ms, m, h, d)",
                number.base10_digits()
            ),
        ));
    }
    input.parse()
}

impl Parse for MemoizeArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Self::default();
        let mut force_seen = None;
        let mut skip_seen = None;
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            let span = input.span();
            if args.parse_freshness(input, &lookahead, span)? {
                // `stale`, `fail_safe`, `beta`, `jitter`, `refresh` or `clock`, parsed.
            } else if lookahead.peek(kw::batch) {
                input.parse::<kw::batch>()?;
                no_value(
                    input,
                    "`batch` takes no value: write `batch` beside `key = \"...\"`, or leave it out",
                )?;
                once(&mut args.batch, span, span, "batch")?;
            } else if lookahead.peek(kw::key) {
                input.parse::<kw::key>()?;
                input.parse::<Token![=]>()?;
                once(&mut args.key, input.parse()?, span, "key")?;
            } else if lookahead.peek(kw::shared_key) {
                input.parse::<kw::shared_key>()?;
                no_value(
                    input,
                    "`shared_key` takes no value: write `shared_key` beside `key = \"...\"` to make the template the whole key, or leave it out",
                )?;
                once(&mut args.shared_key, span, span, "shared_key")?;
            } else if lookahead.peek(kw::expire) {
                input.parse::<kw::expire>()?;
                once(&mut args.expire, duration_value(input)?, span, "expire")?;
            } else if lookahead.peek(kw::version) {
                input.parse::<kw::version>()?;
                let version = version_value(input)?;
                once(&mut args.version, version, span, "version")?;
            } else if lookahead.peek(kw::force_overwrite) {
                input.parse::<kw::force_overwrite>()?;
                once(&mut force_seen, (), span, "force_overwrite")?;
                args.force_overwrite = true;
            } else if lookahead.peek(kw::skip) {
                input.parse::<kw::skip>()?;
                once(&mut skip_seen, (), span, "skip")?;
                args.skip = skip_list(input)?;
            } else if lookahead.peek(kw::cache_none) {
                input.parse::<kw::cache_none>()?;
                input.parse::<Token![=]>()?;
                once(&mut args.cache_none, input.parse()?, span, "cache_none")?;
            } else if lookahead.peek(kw::codec) {
                input.parse::<kw::codec>()?;
                once(&mut args.codec, (codec_value(input)?, span), span, "codec")?;
            } else if lookahead.peek(kw::large_values) {
                input.parse::<kw::large_values>()?;
                once(
                    &mut args.large_values,
                    (size_value(input)?, span),
                    span,
                    "large_values",
                )?;
            } else if lookahead.peek(kw::keep_decoded) {
                input.parse::<kw::keep_decoded>()?;
                no_value(
                    input,
                    "`keep_decoded` takes no value: write `keep_decoded`, or leave it out",
                )?;
                once(&mut args.keep_decoded, span, span, "keep_decoded")?;
            } else if lookahead.peek(kw::tags) {
                input.parse::<kw::tags>()?;
                once(&mut args.tags, tags_value(input)?, span, "tags")?;
            } else if lookahead.peek(kw::companions) {
                input.parse::<kw::companions>()?;
                once(&mut args.companions, bool_value(input)?, span, "companions")?;
            } else if lookahead.peek(kw::lock) {
                input.parse::<kw::lock>()?;
                if input.peek(Token![=]) {
                    let eq = input.parse::<Token![=]>()?;
                    let value: syn::Expr = input.parse()?;
                    return Err(syn::Error::new_spanned(
                        quote::quote!(#eq #value),
                        "`lock` takes no value: write `lock` for the default lock, `lock(timeout = \"5s\", expire = \"30s\", retry = \"250ms\", blocking = false)` to set it up, or leave it out for no lock",
                    ));
                }
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
        args.check_key()?;
        Ok(args)
    }
}

impl MemoizeArgs {
    /// `batch` and `shared_key` are about a `key` template: there must be one.
    fn check_key(&self) -> syn::Result<()> {
        if let (Some(span), None) = (self.batch, &self.key) {
            return Err(syn::Error::new(
                span,
                "`batch` needs a `key` template that names the element, as in `#[cache_memoize(batch, key = \"user:{id}\")] fn users(ids: Vec<u64>) -> HashMap<u64, User>`: each element is stored under its own key",
            ));
        }
        if let (Some(span), None) = (self.shared_key, &self.key) {
            return Err(syn::Error::new(
                span,
                "`shared_key` makes a `key` template the whole key, and there is none: add `key = \"...\"`, or remove `shared_key`",
            ));
        }
        Ok(())
    }

    /// Parses a freshness option if one comes next; `false` when none does.
    fn parse_freshness(
        &mut self,
        input: ParseStream<'_>,
        lookahead: &syn::parse::Lookahead1<'_>,
        span: Span,
    ) -> syn::Result<bool> {
        let fresh = &mut self.fresh;
        if lookahead.peek(kw::stale) {
            input.parse::<kw::stale>()?;
            let value = duration_value(input)?;
            once(&mut fresh.stale, Set { value, span }, span, "stale")?;
        } else if lookahead.peek(kw::fail_safe) {
            input.parse::<kw::fail_safe>()?;
            let value = duration_value(input)?;
            once(&mut fresh.fail_safe, Set { value, span }, span, "fail_safe")?;
        } else if lookahead.peek(kw::beta) {
            input.parse::<kw::beta>()?;
            let value = freshness::beta_value(input)?;
            once(&mut fresh.beta, Set { value, span }, span, "beta")?;
        } else if lookahead.peek(kw::jitter) {
            input.parse::<kw::jitter>()?;
            let value = freshness::jitter_value(input)?;
            once(&mut fresh.jitter, Set { value, span }, span, "jitter")?;
        } else if lookahead.peek(kw::refresh) {
            input.parse::<kw::refresh>()?;
            freshness::refresh_value(input)?;
            once(&mut fresh.refresh_inline, span, span, "refresh")?;
        } else if lookahead.peek(kw::clock) {
            input.parse::<kw::clock>()?;
            once(
                &mut fresh.clock,
                freshness::clock_value(input)?,
                span,
                "clock",
            )?;
        } else {
            return Ok(false);
        }
        Ok(true)
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
                once(&mut args.expire, lock_expire_value(input)?, span, "expire")?;
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

/// `= <integer>` after `version`, with the fix for a quoted one.
fn version_value(input: ParseStream<'_>) -> syn::Result<u32> {
    input.parse::<Token![=]>()?;
    if input.peek(syn::LitStr) {
        let text: syn::LitStr = input.parse()?;
        let fix = match text.value().parse::<u32>() {
            Ok(version) => format!("write `version = {version}`"),
            Err(_) => "write an integer from 0 to 4294967295, such as `version = 2`".to_owned(),
        };
        return Err(syn::Error::new_spanned(
            &text,
            format!("`version` is an integer, not a string: {fix}"),
        ));
    }
    let literal: LitInt = input.parse()?;
    literal.base10_parse::<u32>().map_err(|_| {
        syn::Error::new_spanned(
            &literal,
            "`version` must be an integer from 0 to 4294967295",
        )
    })
}

/// The valid option (a name in backticks in `valid`) `written` most likely meant: one a
/// typo or two away, or the usual names of an expiry (`ttl`, `expiry`, `max_age`).
fn nearest<'v>(written: &str, valid: &'v str) -> Option<&'v str> {
    let names = valid.split('`').skip(1).step_by(2);
    if matches!(
        written,
        "ttl" | "expiry" | "expiration" | "max_age" | "time_to_live"
    ) {
        return names.into_iter().find(|name| *name == "expire");
    }
    names
        .map(|name| (edit_distance(written, name), name))
        .filter(|(distance, _)| *distance <= 2 && *distance < written.len())
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

/// The Levenshtein distance between `a` and `b` (in characters).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The error for a token that is no option: names it, the option it most likely meant,
/// and the valid ones.
fn unknown(
    input: ParseStream<'_>,
    valid: &str,
    lookahead: syn::parse::Lookahead1<'_>,
) -> syn::Error {
    match input.parse::<syn::Ident>() {
        Ok(ident) => {
            let hint = nearest(&ident.to_string(), valid)
                .map(|name| format!("did you mean `{name}`? "))
                .unwrap_or_default();
            syn::Error::new(
                ident.span(),
                format!("unknown option `{ident}`; {hint}expected one of {valid}"),
            )
        }
        Err(_) => {
            let err = lookahead.error();
            syn::Error::new(err.span(), format!("expected one of {valid}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_option_names_the_one_it_most_likely_meant() {
        assert_eq!(nearest("ttl", OPTIONS), Some("expire"));
        assert_eq!(nearest("expires", OPTIONS), Some("expire"));
        assert_eq!(nearest("stael", OPTIONS), Some("stale"));
        assert_eq!(nearest("timeot", LOCK_OPTIONS), Some("timeout"));
        assert_eq!(nearest("colour", OPTIONS), None);
        assert_eq!(nearest("k", OPTIONS), None);
    }
}

/// The messages for a misspelled option and a quoted version, attacked (review 5).
#[cfg(test)]
mod messages {
    use super::*;

    fn error_of(args: &str) -> String {
        match syn::parse_str::<MemoizeArgs>(args) {
            Ok(_) => String::from("(accepted)"),
            Err(err) => err.to_string(),
        }
    }

    /// Held: the quoted integer gets its fix.
    #[test]
    fn a_quoted_integer_version_is_told_to_drop_the_quotes() {
        assert!(error_of(r#"version = "2""#).contains("write `version = 2`"));
    }

    /// FINDING 3: a quoted version that is no integer is told to write something that
    /// does not compile either (`version = v2`, `version = `, `version = 1.0`, or a
    /// number out of range).
    #[test]
    fn a_quoted_version_that_is_no_integer_is_not_told_to_write_it_bare() {
        for text in ["v2", "", "1.0", "5000000000", "two"] {
            let message = error_of(&format!("version = {text:?}"));
            assert!(
                !message.contains(&format!("write `version = {text}`")),
                "{text:?}: {message}"
            );
        }
    }

    /// Held: no hint for names far from every option, nor for very short ones; the
    /// hint names a real option of the level where it was written.
    #[test]
    fn hints_stay_within_reason() {
        for written in ["a", "x", "ke", "kye", "lck", "expires", "ttl", "codecs"] {
            let hint = nearest(written, OPTIONS);
            assert!(
                hint.is_none_or(|name| OPTIONS.contains(&format!("`{name}`"))),
                "{written}: {hint:?}"
            );
        }
        assert_eq!(nearest("a", OPTIONS), None);
        assert_eq!(nearest("ttl", LOCK_OPTIONS), Some("expire"));
        assert_eq!(nearest("blockng", LOCK_OPTIONS), Some("blocking"));
        // Non-ASCII: distance in characters, length in bytes.
        let _ = nearest("é", OPTIONS);
        let _ = nearest("ü", LOCK_OPTIONS);
    }
}
