//! Which part of a memoized function's return value is stored, decided by its type.
//!
//! A macro sees `AppResult<u32>`, not `Result<u32, AppError>`; the compiler sees
//! through aliases. Generated code asks it with autoref specialization:
//! `(&&OutcomeOf::<R>::new()).__cache_memoize_outcome()` is [`ResultOutcome`] when `R`
//! is a `Result` under any name (only `Ok` is stored), [`PlainOutcome`] otherwise (the
//! whole value is stored). A generic `R` is a plain value: it is stored as it is.
//!
//! Each outcome splits the value into what is stored (`Ok`) and what is passed through
//! unstored (`Err`), for `try_memoize`, and joins the answer back into `R`. Under
//! `cache_none = false`, [`ReturnsOption`] does the same for `Option` (`None` is not
//! stored).

// A kind's `self` is how the compiler chose it (autoref specialization): methods take it
// though they do not read it, and keep the shape the generated code expects.
#![allow(clippy::unused_self, clippy::unnecessary_wraps)]

use std::convert::Infallible;
use std::marker::PhantomData;

/// The return type `R`, as a value to dispatch on.
pub struct OutcomeOf<R: ?Sized>(PhantomData<fn() -> PhantomData<R>>);

impl<R: ?Sized> OutcomeOf<R> {
    /// The dispatcher for return type `R`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<R: ?Sized> Default for OutcomeOf<R> {
    fn default() -> Self {
        Self::new()
    }
}

/// A `Result` under any name: `Ok` is stored, `Err` passed through.
#[derive(Clone, Copy)]
pub struct ResultOutcome;

/// Any other type: stored whole.
#[derive(Clone, Copy)]
pub struct PlainOutcome;

/// A `None` that was not stored.
#[derive(Debug, Clone, Copy)]
pub struct NotStored;

/// First choice: the return type is a `Result`.
pub trait ViaResult {
    /// How this return type is stored.
    fn __cache_memoize_outcome(&self) -> ResultOutcome {
        ResultOutcome
    }
}
impl<T, E> ViaResult for &OutcomeOf<Result<T, E>> {}

/// Otherwise: a plain value.
pub trait ViaPlain {
    /// How this return type is stored.
    fn __cache_memoize_outcome(&self) -> PlainOutcome {
        PlainOutcome
    }
}
impl<R: ?Sized> ViaPlain for OutcomeOf<R> {}

/// `cache_none = false`: a function returning an `Option` (under any name), whose
/// `None` is not stored (and replaces a stored value with the mark of an absent one).
#[derive(Clone, Copy)]
pub struct OptionOutcome;

/// How a return type `R` is stored: split into what is stored (`Ok`) and what is passed
/// through unstored (`Err`), and joined back into `R`.
pub trait Shape<R>: Copy + Send + Sync + 'static {
    /// What is stored.
    type Stored;
    /// What is returned but not stored.
    type Passed;
    /// Whether a passed value is a value not to cache (`cache_none = false`'s `None`)
    /// rather than a failure: computed by a refresh or a forced call, it replaces the
    /// stored value with the mark of an absent one.
    const ABSENT: bool = false;

    /// What to store and what to pass through.
    fn split(self, value: R) -> Result<Self::Stored, Self::Passed>;

    /// The function's return value again.
    fn join(self, answer: Result<Self::Stored, Self::Passed>) -> R;
}

impl<T, E> Shape<Result<T, E>> for ResultOutcome {
    type Stored = T;
    type Passed = E;

    fn split(self, value: Result<T, E>) -> Result<T, E> {
        value
    }

    fn join(self, answer: Result<T, E>) -> Result<T, E> {
        answer
    }
}

impl<R> Shape<R> for PlainOutcome {
    type Stored = R;
    type Passed = Infallible;

    fn split(self, value: R) -> Result<R, Infallible> {
        Ok(value)
    }

    fn join(self, answer: Result<R, Infallible>) -> R {
        match answer {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }
}

impl<R: ReturnsOption> Shape<R> for OptionOutcome {
    type Stored = R::Some;
    type Passed = NotStored;
    const ABSENT: bool = true;

    fn split(self, value: R) -> Result<R::Some, NotStored> {
        value.split()
    }

    fn join(self, answer: Result<R::Some, NotStored>) -> R {
        R::join(answer)
    }
}

/// What `cache_none = false` needs of the return type.
#[diagnostic::on_unimplemented(
    message = "`cache_none = false` needs a function returning `Option<T>`, not `{Self}`",
    label = "not an `Option`",
    note = "remove `cache_none = false`: every return value is stored unless it is a `Result`'s `Err`"
)]
pub trait ReturnsOption: Sized {
    /// `T` of `Option<T>`.
    type Some;
    /// `Some`'s value, or `None` as `Err`.
    fn split(self) -> Result<Self::Some, NotStored>;
    /// The `Option` again.
    fn join(answer: Result<Self::Some, NotStored>) -> Self;
}

impl<T> ReturnsOption for Option<T> {
    type Some = T;

    fn split(self) -> Result<T, NotStored> {
        self.ok_or(NotStored)
    }

    fn join(answer: Result<T, NotStored>) -> Self {
        answer.ok()
    }
}

#[cfg(test)]
#[allow(clippy::needless_borrow)] // the borrows choose the kind, as in generated code
mod tests {
    use super::*;

    type AppResult<T> = Result<T, String>;

    #[test]
    fn a_result_alias_is_a_result() {
        let outcome = (&&OutcomeOf::<AppResult<u8>>::new()).__cache_memoize_outcome();
        let split: Result<u8, String> = outcome.split(Err("no".to_owned()));
        assert!(split.is_err());
    }

    #[test]
    fn anything_else_is_stored_whole() {
        let outcome = (&&OutcomeOf::<Option<u8>>::new()).__cache_memoize_outcome();
        assert_eq!(outcome.split(None::<u8>), Ok(None));
    }

    #[test]
    fn cache_none_false_passes_none_through() {
        assert!(OptionOutcome.split(None::<u8>).is_err());
        let split = OptionOutcome.split(Some(3_u8));
        assert_eq!(Shape::<Option<u8>>::join(OptionOutcome, split), Some(3));
    }
}
