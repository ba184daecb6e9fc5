//! The freshness options (`stale`, `fail_safe`, `beta`, `jitter`, `refresh`, `clock`):
//! their values, the combinations that make sense, and whether a stale value can be
//! refreshed in the background.

use proc_macro2::Span;
use syn::parse::ParseStream;
use syn::spanned::Spanned;
use syn::{Lit, LitStr, Token};

use crate::sig::{Output, Param};

/// An option's value and where it was written (errors about it point there).
pub(crate) struct Set<T> {
    pub(crate) value: T,
    pub(crate) span: Span,
}

/// The freshness options as written; `None` keeps the runtime's defaults.
#[derive(Default)]
pub(crate) struct FreshnessArgs {
    /// `stale = "1h"`, in milliseconds.
    pub(crate) stale: Option<Set<u64>>,
    /// `fail_safe = "10s"`, in milliseconds.
    pub(crate) fail_safe: Option<Set<u64>>,
    /// `beta = 1.0`.
    pub(crate) beta: Option<Set<f64>>,
    /// `jitter = "10%"`, as a fraction (0.1).
    pub(crate) jitter: Option<Set<f64>>,
    /// `refresh = "inline"`.
    pub(crate) refresh_inline: Option<Span>,
    /// `clock = path::to::function`.
    pub(crate) clock: Option<syn::Path>,
}

/// The largest `jitter`, in percent (the runtime's bound: a TTL is never cut by more).
const MAX_JITTER_PERCENT: f64 = 90.0;

/// `= 1.0` (or `= 1`): a number, not negative.
pub(crate) fn beta_value(input: ParseStream<'_>) -> syn::Result<f64> {
    input.parse::<Token![=]>()?;
    if input.peek(Token![-]) {
        let minus = input.parse::<Token![-]>()?;
        let literal: Lit = input.parse()?;
        return Err(syn::Error::new_spanned(
            quote::quote!(#minus #literal),
            "`beta` cannot be negative: it scales how early a value is refreshed (1.0 is XFetch's choice, 0 turns early refresh off)",
        ));
    }
    let literal: Lit = input.parse()?;
    let value = match &literal {
        Lit::Float(float) => float.base10_parse::<f64>()?,
        Lit::Int(int) => int.base10_parse::<f64>()?,
        _ => {
            return Err(syn::Error::new_spanned(
                &literal,
                "`beta` takes a number, such as `beta = 1.0` (XFetch's choice)",
            ));
        }
    };
    if !value.is_finite() {
        return Err(syn::Error::new_spanned(
            &literal,
            "`beta` must be a finite number, such as `1.0`",
        ));
    }
    Ok(value)
}

/// `= "10%"`: a fraction from 0 to 0.9.
pub(crate) fn jitter_value(input: ParseStream<'_>) -> syn::Result<f64> {
    input.parse::<Token![=]>()?;
    let literal: LitStr = input.parse()?;
    let text = literal.value();
    percent(&text).map(|p| p / 100.0).map_err(|why| {
        syn::Error::new_spanned(
            &literal,
            format!(
                "invalid jitter {text:?}: {why}; write a percentage from \"0%\" to \"{MAX_JITTER_PERCENT}%\", such as \"10%\""
            ),
        )
    })
}

/// `"10%"` or `"2.5%"` → its number of percent, within 0 to 90.
fn percent(text: &str) -> Result<f64, String> {
    let number = text
        .strip_suffix('%')
        .ok_or_else(|| "it does not end in `%`".to_owned())?;
    let well_formed = !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && number.bytes().filter(|&b| b == b'.').count() <= 1
        && number.bytes().next().is_some_and(|b| b.is_ascii_digit());
    let value = well_formed
        .then(|| number.parse::<f64>().ok())
        .flatten()
        .ok_or_else(|| format!("{number:?} is not a number"))?;
    if value > MAX_JITTER_PERCENT {
        return Err(format!(
            "more than {MAX_JITTER_PERCENT}% would leave values almost no time to live"
        ));
    }
    Ok(value)
}

/// `= path::to::function`, a function returning `Arc<dyn Clock>`.
pub(crate) fn clock_value(input: ParseStream<'_>) -> syn::Result<syn::Path> {
    input.parse::<Token![=]>()?;
    if input.peek(LitStr) {
        let literal: LitStr = input.parse()?;
        return Err(syn::Error::new_spanned(
            literal,
            "`clock` names a function returning `Arc<dyn cache_memoize::Clock>`, unquoted: `clock = my_clock`",
        ));
    }
    input.parse()
}

/// `= "inline"`, the only choice besides the default.
pub(crate) fn refresh_value(input: ParseStream<'_>) -> syn::Result<()> {
    input.parse::<Token![=]>()?;
    let literal: LitStr = input.parse()?;
    match literal.value().as_str() {
        "inline" => Ok(()),
        "background" => Err(syn::Error::new_spanned(
            &literal,
            "a background refresh is the default with `stale` or `beta` when every argument is owned; remove `refresh`, or write `refresh = \"inline\"` to refresh in the caller that finds the value stale",
        )),
        other => Err(syn::Error::new_spanned(
            &literal,
            format!(
                "unknown refresh {other:?}; expected \"inline\" (refresh in the caller that finds the value stale; the default refreshes in the background when every argument is owned)"
            ),
        )),
    }
}

impl FreshnessArgs {
    /// Whether a stale (or early) value is refreshed at all.
    fn refreshes(&self) -> bool {
        self.stale.is_some() || self.beta.as_ref().is_some_and(|beta| beta.value > 0.0)
    }

    /// The options' combinations: each is an error when it would have no effect.
    pub(crate) fn check(&self, output: &Output<'_>) -> syn::Result<()> {
        if let Output::Iter(_) = output {
            return self.check_iterator();
        }
        let needs_refresh = [
            (
                self.fail_safe.as_ref().map(|s| s.span),
                "fail_safe",
                "it spaces out the retries of a failed refresh of a stale value",
            ),
            (
                self.refresh_inline,
                "refresh",
                "it says where a stale value is refreshed",
            ),
        ];
        for (span, name, what) in needs_refresh {
            if let (Some(span), false) = (span, self.refreshes()) {
                return Err(syn::Error::new(
                    span,
                    format!(
                        "`{name}` has no effect without `stale` (or a `beta` above 0): {what}; add `stale = \"...\"` or remove `{name}`"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// An iterator honours none of them: its manifest carries no freshness stamp.
    fn check_iterator(&self) -> syn::Result<()> {
        let written = [
            (self.stale.as_ref().map(|s| s.span), "stale"),
            (self.beta.as_ref().map(|s| s.span), "beta"),
            (self.fail_safe.as_ref().map(|s| s.span), "fail_safe"),
            (self.jitter.as_ref().map(|s| s.span), "jitter"),
            (self.refresh_inline, "refresh"),
            (self.clock.as_ref().map(Spanned::span), "clock"),
        ];
        let mut errors: Option<syn::Error> = None;
        for (span, name) in written {
            let Some(span) = span else { continue };
            let error = syn::Error::new(
                span,
                format!(
                    "memoized iterators do not honour `{name}`: a sequence is fresh until `expire`, then a miss (serving a stale sequence while the new one is written would keep the old chunks alive beside the new ones); remove `{name}`"
                ),
            );
            match &mut errors {
                Some(errors) => errors.combine(error),
                None => errors = Some(error),
            }
        }
        errors.map_or(Ok(()), Err)
    }

    /// Whether a stale value is refreshed on a thread (or task) of its own: when one
    /// can be, every parameter is owned (no reference, no lifetime), and `refresh =
    /// "inline"` is not written.
    pub(crate) fn detached(&self, params: &[Param]) -> bool {
        self.refreshes() && self.refresh_inline.is_none() && params.iter().all(|p| !p.borrows)
    }
}

#[cfg(test)]
mod tests {
    use super::percent;

    #[test]
    fn accepts_percentages_up_to_ninety() {
        assert_eq!(percent("10%"), Ok(10.0));
        assert_eq!(percent("2.5%"), Ok(2.5));
        assert_eq!(percent("0%"), Ok(0.0));
        assert_eq!(percent("90%"), Ok(90.0));
    }

    #[test]
    fn rejects_other_text() {
        for bad in [
            "10", "%", "-5%", "91%", "1e1%", ".5%", "1.2.3%", " 5%", "5 %", "ten%",
        ] {
            assert!(percent(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
