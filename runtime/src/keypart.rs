//! How one argument becomes one part of a key, by its type.
//!
//! Generated code cannot see whether a type is `Display`, so it asks the compiler: the
//! expression `(&&&KeyArg(&x)).__cache_memoize_kind()` resolves (autoref
//! specialization) to the first kind that applies, in this order:
//!
//! 1. [`Display`] types: the `Display` output, escaped ([`escape_key_part`]); the form
//!    keys had before, so keys of all-`Display` arguments did not change.
//! 2. [`KeyPart`] types: containers of key parts and byte slices, written in the
//!    unambiguous form documented on [`KeyPart`].
//! 3. [`Serialize`] types: `~` and the hex of their bincode encoding, or `#` and the
//!    SHA-256 of that encoding when it is longer than 32 bytes.
//!
//! A type that is none of these fails on [`SerializeKeyPart`], whose message names the
//! ways out (`skip(..)`, `{x:?}`). Every kind's output is free of `:`, so the macro can
//! end an interpolated part with `:` and placeholders side by side stay unambiguous.

// A kind's `self` is how the compiler chose it (autoref specialization): methods take it
// though they do not read it, and keep the shape the generated code expects.
#![allow(clippy::unused_self, clippy::unnecessary_wraps)]

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::{Debug, Display, Write as _};
use std::rc::Rc;
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::key::escape_key_part;

/// A type written into a cache key by its structure: containers of key parts, byte
/// slices, and the scalars they hold.
///
/// A memoized function's arguments of these types are key parts without any option.
/// Types that implement [`Display`] use their `Display` output instead (escaped), so
/// implement this trait for a type of your own only when it is not `Display`.
///
/// The written form (distinct values of one type never write the same text, and the
/// text never contains `:`, a brace, a space or a control character):
///
/// | value | written |
/// |---|---|
/// | integers, floats, `bool` | their `Display` output: `7`, `-1.5`, `true` |
/// | `str`, `String`, `char` | quoted, escaped as [`escape_key_part`] does and `"` as `%22`: `"a%3Ab"` |
/// | `Option<T>` | `Some(…)` or `None` |
/// | `Vec<T>`, `VecDeque<T>`, `[T]`, `[T; N]` | `[…,…]` |
/// | `Vec<u8>`, `[u8]`, `[u8; N]` (bytes) | `0x` and lowercase hex: `0x00ff` |
/// | tuples (up to 8) | `(…,…)`; a 1-tuple `(…,)`; `()` |
/// | `BTreeMap`, `HashMap` | `[k=v,…]`, entries sorted by their written form |
/// | `BTreeSet`, `HashSet` | `[…,…]`, sorted by their written form |
/// | `&T`, `Box<T>`, `Rc<T>`, `Arc<T>`, `Cow<T>` | as `T` |
///
/// ```
/// use cache_memoize::KeyPart;
///
/// let mut out = String::new();
/// (Some("a b"), vec![1_u8, 255]).write_key_part(&mut out);
/// assert_eq!(out, r#"(Some("a%20b"),0x01ff)"#);
/// ```
pub trait KeyPart {
    /// Appends this value's written form to `out`.
    fn write_key_part(&self, out: &mut String);

    /// Appends the written form of a sequence of such values: `[…,…]` unless the type
    /// has a denser one (bytes are written in hex).
    fn write_key_seq(items: &[Self], out: &mut String)
    where
        Self: Sized,
    {
        write_list(items.iter(), out);
    }
}

fn write_list<'a, T: KeyPart + 'a>(items: impl Iterator<Item = &'a T>, out: &mut String) {
    out.push('[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        item.write_key_part(out);
    }
    out.push(']');
}

/// Writes each entry apart, then joins them sorted: the order of a hash map or set is
/// not the same in two processes, the sorted written form is.
fn write_sorted(entries: impl Iterator<Item = String>, out: &mut String) {
    let mut entries: Vec<String> = entries.collect();
    entries.sort_unstable();
    out.push('[');
    out.push_str(&entries.join(","));
    out.push(']');
}

fn written(part: &(impl KeyPart + ?Sized)) -> String {
    let mut out = String::new();
    part.write_key_part(&mut out);
    out
}

macro_rules! displayed {
    ($($ty:ty)*) => {$(
        impl KeyPart for $ty {
            fn write_key_part(&self, out: &mut String) {
                // Writing to a String cannot fail.
                let _ = write!(out, "{self}");
            }
        }
    )*};
}

displayed!(u16 u32 u64 u128 usize i8 i16 i32 i64 i128 isize f32 f64 bool);

impl KeyPart for u8 {
    fn write_key_part(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }

    fn write_key_seq(items: &[Self], out: &mut String) {
        out.push_str("0x");
        for byte in items {
            let _ = write!(out, "{byte:02x}");
        }
    }
}

fn write_quoted(text: &str, out: &mut String) {
    out.push('"');
    out.push_str(&escape_key_part(text).replace('"', "%22"));
    out.push('"');
}

impl KeyPart for str {
    fn write_key_part(&self, out: &mut String) {
        write_quoted(self, out);
    }
}

impl KeyPart for String {
    fn write_key_part(&self, out: &mut String) {
        write_quoted(self, out);
    }
}

impl KeyPart for char {
    fn write_key_part(&self, out: &mut String) {
        write_quoted(self.encode_utf8(&mut [0; 4]), out);
    }
}

impl<T: KeyPart> KeyPart for Option<T> {
    fn write_key_part(&self, out: &mut String) {
        match self {
            Some(value) => {
                out.push_str("Some(");
                value.write_key_part(out);
                out.push(')');
            }
            None => out.push_str("None"),
        }
    }
}

impl<T: KeyPart> KeyPart for [T] {
    fn write_key_part(&self, out: &mut String) {
        T::write_key_seq(self, out);
    }
}

impl<T: KeyPart, const N: usize> KeyPart for [T; N] {
    fn write_key_part(&self, out: &mut String) {
        T::write_key_seq(self, out);
    }
}

impl<T: KeyPart> KeyPart for Vec<T> {
    fn write_key_part(&self, out: &mut String) {
        T::write_key_seq(self, out);
    }
}

impl<T: KeyPart> KeyPart for VecDeque<T> {
    fn write_key_part(&self, out: &mut String) {
        match self.as_slices() {
            (all, []) => T::write_key_seq(all, out),
            _ => write_list(self.iter(), out),
        }
    }
}

impl<K: KeyPart, V: KeyPart, S> KeyPart for HashMap<K, V, S> {
    fn write_key_part(&self, out: &mut String) {
        write_sorted(self.iter().map(|(k, v)| entry(k, v)), out);
    }
}

impl<K: KeyPart, V: KeyPart> KeyPart for BTreeMap<K, V> {
    fn write_key_part(&self, out: &mut String) {
        write_sorted(self.iter().map(|(k, v)| entry(k, v)), out);
    }
}

fn entry(key: &impl KeyPart, value: &impl KeyPart) -> String {
    let mut out = written(key);
    out.push('=');
    value.write_key_part(&mut out);
    out
}

impl<T: KeyPart, S> KeyPart for HashSet<T, S> {
    fn write_key_part(&self, out: &mut String) {
        write_sorted(self.iter().map(written), out);
    }
}

impl<T: KeyPart> KeyPart for BTreeSet<T> {
    fn write_key_part(&self, out: &mut String) {
        write_sorted(self.iter().map(written), out);
    }
}

macro_rules! pointer {
    ($($ty:ty),*) => {$(
        impl<T: KeyPart + ?Sized> KeyPart for $ty {
            fn write_key_part(&self, out: &mut String) {
                (**self).write_key_part(out);
            }
        }
    )*};
}

pointer!(&T, &mut T, Box<T>, Rc<T>, Arc<T>);

impl<T: KeyPart + ToOwned + ?Sized> KeyPart for Cow<'_, T> {
    fn write_key_part(&self, out: &mut String) {
        (**self).write_key_part(out);
    }
}

impl KeyPart for () {
    fn write_key_part(&self, out: &mut String) {
        out.push_str("()");
    }
}

impl<A: KeyPart> KeyPart for (A,) {
    fn write_key_part(&self, out: &mut String) {
        out.push('(');
        self.0.write_key_part(out);
        out.push_str(",)");
    }
}

macro_rules! tuple {
    ($first:ident $($rest:ident)+) => {
        impl<$first: KeyPart, $($rest: KeyPart),+> KeyPart for ($first, $($rest,)+) {
            #[allow(non_snake_case)]
            fn write_key_part(&self, out: &mut String) {
                let ($first, $($rest,)+) = self;
                out.push('(');
                $first.write_key_part(out);
                $(
                    out.push(',');
                    $rest.write_key_part(out);
                )+
                out.push(')');
            }
        }
    };
}

tuple!(A B);
tuple!(A B C);
tuple!(A B C D);
tuple!(A B C D E);
tuple!(A B C D E F);
tuple!(A B C D E F G);
tuple!(A B C D E F G H);

/// Serialized key parts at most this long are written in hex; longer ones as a digest.
const SERIALIZED_INLINE: usize = 32;

/// Writes a [`Serialize`] value: `~` and the hex of its bincode encoding, or `#` and
/// the SHA-256 hex of that encoding when longer than [`SERIALIZED_INLINE`] bytes.
/// A value that fails to serialize writes `!` and the error's digest: a key that can
/// only miss, never one shared with another value.
pub(crate) fn write_serialized<T: Serialize + ?Sized>(value: &T, out: &mut String) {
    match bincode::serde::encode_to_vec(value, bincode::config::standard()) {
        Ok(bytes) if bytes.len() <= SERIALIZED_INLINE => {
            out.push('~');
            write_hex(&bytes, out);
        }
        Ok(bytes) => {
            out.push('#');
            write_hex(&Sha256::digest(&bytes), out);
        }
        Err(err) => {
            tracing::warn!(error = %err, ty = std::any::type_name::<T>(), "a key part does not serialize; the call will not hit");
            out.push('!');
            write_hex(&Sha256::digest(err.to_string().as_bytes()), out);
        }
    }
}

fn write_hex(bytes: &[u8], out: &mut String) {
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
}

/// One argument on its way into a key; see the module docs for how its kind is chosen.
pub struct KeyArg<'a, T: ?Sized>(pub &'a T);

/// Written through `Display`, escaped.
#[derive(Clone, Copy)]
pub struct DisplayKind;
/// Written as a [`KeyPart`].
#[derive(Clone, Copy)]
pub struct StructureKind;
/// Written through `Serialize`.
#[derive(Clone, Copy)]
pub struct SerializeKind;

/// First choice: `Display`.
pub trait ViaDisplay {
    /// The kind that writes this argument.
    fn __cache_memoize_kind(&self) -> DisplayKind {
        DisplayKind
    }
}
impl<T: Display + ?Sized> ViaDisplay for &&KeyArg<'_, T> {}

/// Second choice: [`KeyPart`].
pub trait ViaStructure {
    /// The kind that writes this argument.
    fn __cache_memoize_kind(&self) -> StructureKind {
        StructureKind
    }
}
impl<T: KeyPart + ?Sized> ViaStructure for &KeyArg<'_, T> {}

/// Last choice: `Serialize`, or the error that says what to do.
pub trait ViaSerialize {
    /// The kind that writes this argument.
    fn __cache_memoize_kind(&self) -> SerializeKind {
        SerializeKind
    }
}
impl<T: ?Sized> ViaSerialize for KeyArg<'_, T> {}

/// What an argument's type needs when it is neither `Display` nor a [`KeyPart`]:
/// `Serialize`. Its only purpose is the error message.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a cache key",
    label = "this argument is in the key, but its type is not `Display`, a container of key parts, or `Serialize`",
    note = "every parameter, the receiver included, is part of the key: leave it out with `skip(name)` (`skip(self)` for the receiver) if it does not change the result",
    note = "or name it in the `key` template as `{{name:?}}` to write its `Debug` output, or name a field of it that is a key part, as in `{{self.id}}`",
    note = "or derive `serde::Serialize` for its type, or implement `Display` or `cache_memoize::KeyPart`"
)]
pub trait SerializeKeyPart {
    /// Appends the serialized form (see [`SerializeKind`]).
    fn write_serialized(&self, out: &mut String);
}

impl<T: Serialize + ?Sized> SerializeKeyPart for T {
    fn write_serialized(&self, out: &mut String) {
        write_serialized(self, out);
    }
}

impl DisplayKind {
    /// The key part of `value`.
    pub fn key_part<T: Display + ?Sized>(self, value: &T) -> String {
        escaped(value.to_string())
    }
}

impl StructureKind {
    /// The key part of `value`.
    pub fn key_part<T: KeyPart + ?Sized>(self, value: &T) -> String {
        written(value)
    }
}

impl SerializeKind {
    /// The key part of `value`.
    pub fn key_part<T: SerializeKeyPart + ?Sized>(self, value: &T) -> String {
        let mut out = String::new();
        value.write_serialized(&mut out);
        out
    }
}

/// `text` escaped as a key part, in place when nothing needs escaping (most keys).
fn escaped(text: String) -> String {
    match escape_key_part(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(escaped) => escaped,
    }
}

/// The key part of `{x:?}`: the `Debug` output, escaped.
pub fn debug_key_part<T: Debug + ?Sized>(value: &T) -> String {
    escaped(format!("{value:?}"))
}

/// The key part naming a type (a generic function's instantiation).
pub fn type_key_part(name: &str) -> String {
    escape_key_part(name).into_owned()
}

#[cfg(test)]
#[allow(clippy::needless_borrow)] // the borrows choose the kind, as in generated code
mod tests {
    use super::*;

    fn part<T: KeyPart + ?Sized>(value: &T) -> String {
        written(value)
    }

    #[test]
    fn containers_are_written_by_structure() {
        assert_eq!(part(&Some(10_u32)), "Some(10)");
        assert_eq!(part(&None::<u32>), "None");
        assert_eq!(
            part(&vec!["a".to_owned(), "b c".to_owned()]),
            r#"["a","b%20c"]"#
        );
        assert_eq!(part(&(1_u8, 2_u8)), "(1,2)");
        assert_eq!(part(&(1_u8,)), "(1,)");
        assert_eq!(part(&()), "()");
        assert_eq!(part(&b"hi"[..]), "0x6869");
        assert_eq!(part(&[0_u8, 255]), "0x00ff");
        assert_eq!(part(&[[1_u16, 2], [3, 4]]), "[[1,2],[3,4]]");
    }

    #[test]
    fn distinct_values_write_distinct_parts() {
        assert_ne!(part(&Some("")), part(&None::<&str>));
        assert_ne!(part(&Vec::<&str>::new()), part(&vec![""]));
        assert_ne!(part(&("a:b", "c")), part(&("a", "b:c")));
        assert_ne!(part(&vec!["a,b"]), part(&vec!["a", "b"]));
        assert_ne!(part(&vec!["a\""]), part(&vec!["a%22"]));
        assert_ne!(part(&Some(Some(1_u8))), part(&Some(1_u8)));
        assert_ne!(part(&vec![(1_u8, 2_u8)]), part(&vec![(12_u8, 0_u8)]));
    }

    #[test]
    fn maps_and_sets_are_sorted() {
        let mut a = HashMap::new();
        let mut b = HashMap::new();
        for i in 0..50_u32 {
            a.insert(i, i.to_string());
            b.insert(49 - i, (49 - i).to_string());
        }
        assert_eq!(part(&a), part(&b));
        assert!(
            part(&a).starts_with(r#"[0="0",10="10",11="11""#),
            "sorted by written form"
        );
        let set: HashSet<&str> = ["b", "a"].into_iter().collect();
        assert_eq!(part(&set), r#"["a","b"]"#);
    }

    #[test]
    fn no_written_form_contains_a_separator() {
        let nasty = vec![Some("a:b {c} d\n%".to_owned()), None];
        let written = part(&(nasty, 'x', -1.5_f64));
        assert!(!written.contains([':', '{', '}', ' ', '\n']), "{written}");
    }

    #[test]
    fn kinds_are_chosen_display_first_then_structure_then_serialize() {
        #[derive(Serialize)]
        struct Filter {
            tags: Vec<String>,
        }
        let n = 7_u32;
        let name = "a:b";
        let list = vec![1_u16];
        let filter = Filter {
            tags: vec!["x".into()],
        };
        assert_eq!((&&&KeyArg(&n)).__cache_memoize_kind().key_part(&n), "7");
        assert_eq!(
            (&&&KeyArg(&name)).__cache_memoize_kind().key_part(&name),
            "a%3Ab"
        );
        assert_eq!(
            (&&&KeyArg(&list)).__cache_memoize_kind().key_part(&list),
            "[1]"
        );
        let serialized = (&&&KeyArg(&filter))
            .__cache_memoize_kind()
            .key_part(&filter);
        assert_eq!(serialized, "~010178");
    }

    #[test]
    fn long_serialized_parts_are_digested() {
        let long = ["x".repeat(100)];
        let mut out = String::new();
        write_serialized(&long, &mut out);
        assert!(out.starts_with('#'));
        assert_eq!(out.len(), 1 + 64);
    }
}
