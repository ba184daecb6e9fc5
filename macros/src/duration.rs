//! Duration literals, parsed at compile time: `"250ms"`, `"5s"`, `"1m30s"`, `"1h"`, `"30d"`.

use syn::LitStr;

const UNITS: &str = "ms, s, m, h, d";

/// The longest duration an option takes: 100 years (365-day years), the runtime's
/// `MAX_EXPIRE`. Anything longer is a mistake, and would be clamped at run time.
const MAX_MILLIS: u64 = 100 * 365 * 86_400_000;

/// The shortest lock `expire`: 100 ms, the runtime's `MIN_LOCK_EXPIRE`.
pub(crate) const MIN_LOCK_EXPIRE_MILLIS: u64 = 100;

/// Parses `literal` into milliseconds, at least 1 and at most 100 years; errors are
/// spanned on the literal.
pub(crate) fn parse(literal: &LitStr) -> syn::Result<u64> {
    let text = literal.value();
    let millis = parse_millis(&text).map_err(|why| {
        syn::Error::new_spanned(
            literal,
            format!("invalid duration {text:?}: {why}; write numbers with units ({UNITS}), such as \"250ms\", \"5s\", \"1m30s\", \"1h\" or \"30d\""),
        )
    })?;
    if millis == 0 {
        return Err(syn::Error::new_spanned(
            literal,
            "the duration must be more than zero",
        ));
    }
    if millis > MAX_MILLIS {
        return Err(syn::Error::new_spanned(
            literal,
            format!(
                "the duration {text:?} is longer than 100 years (\"36500d\"), the longest allowed"
            ),
        ));
    }
    Ok(millis)
}

/// Parses a lock's `expire`: as [`parse`], and at least 100 ms, so that the lock
/// outlives the round trips that take and renew it.
pub(crate) fn parse_lock_expire(literal: &LitStr) -> syn::Result<u64> {
    let millis = parse(literal)?;
    if millis < MIN_LOCK_EXPIRE_MILLIS {
        return Err(syn::Error::new_spanned(
            literal,
            format!(
                "a lock's `expire` must be at least \"{MIN_LOCK_EXPIRE_MILLIS}ms\", so that the lock outlives the round trips that take and renew it"
            ),
        ));
    }
    Ok(millis)
}

fn parse_millis(text: &str) -> Result<u64, String> {
    if text.is_empty() {
        return Err("it is empty".into());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("expected a number at {rest:?}"));
        }
        let (number, tail) = rest.split_at(digits);
        if tail.starts_with('.') {
            return Err(
                "fractions are not supported; use a smaller unit (\"1500ms\", not \"1.5s\")".into(),
            );
        }
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let scale: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("{number} has no unit")),
            other => return Err(format!("unknown unit {other:?}")),
        };
        let amount = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .and_then(|ms| total.checked_add(ms))
            .ok_or("it is too large")?;
        total = amount;
        rest = tail;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_millis;

    #[test]
    fn accepts_units_and_compounds() {
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert_eq!(parse_millis("5s"), Ok(5_000));
        assert_eq!(parse_millis("1m30s"), Ok(90_000));
        assert_eq!(parse_millis("1h"), Ok(3_600_000));
        assert_eq!(parse_millis("30d"), Ok(2_592_000_000));
    }

    #[test]
    fn the_longest_duration_is_100_years() {
        assert_eq!(parse_millis("36500d"), Ok(super::MAX_MILLIS));
    }

    #[test]
    fn rejects_bad_literals() {
        for bad in [
            "",
            "5",
            "s",
            "5 s",
            "5sec",
            "1.5s",
            "-1s",
            "99999999999999999999d",
        ] {
            assert!(parse_millis(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
