//! The hidden `in_a_trait_impl_write_cache_memoize_companions_false_for_<name>`
//! method the attribute emits for every method with a receiver, under a user crate's
//! strict lints, with every receiver form and impl shape. Compiling is the test; the
//! calls are in `tests/tests/macro_receivers.rs`.
#![deny(
    missing_docs,
    unreachable_pub,
    dead_code,
    unused,
    missing_debug_implementations
)]
#![deny(clippy::missing_docs_in_private_items)]

use std::fmt::Display;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use cache_memoize::cache_memoize;

/// A type with memoized methods of every receiver.
#[derive(Debug, Clone, Default)]
pub struct Shop {
    /// Its id.
    pub id: u32,
}

impl Display for Shop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "receivers-shop-{}", self.id)
    }
}

#[allow(clippy::boxed_local)]
impl Shop {
    /// By reference.
    #[cache_memoize(key = "receivers:ref:{self}:{n}")]
    pub fn by_ref(&self, n: u32) -> u32 {
        self.id + n
    }

    /// By mutable reference (skipped: it is not a key part).
    #[cache_memoize(key = "receivers:mut:{n}", skip(self))]
    pub fn by_mut(&mut self, n: u32) -> u32 {
        self.id += 0;
        n
    }

    /// By value, `mut`.
    #[cache_memoize(key = "receivers:val:{self}")]
    pub fn by_value(mut self) -> u32 {
        self.id += 0;
        self.id
    }

    /// Boxed (its companions take the box too: `clippy::boxed_local` on them,
    /// which an `allow` on the method does not reach; allowed on the impl).
    #[cache_memoize(key = "receivers:box:{n}", skip(self))]
    pub fn boxed(self: Box<Self>, n: u32) -> u32 {
        self.id + n
    }

    /// Shared.
    #[cache_memoize(key = "receivers:arc:{n}", skip(self))]
    #[allow(clippy::needless_pass_by_value)]
    pub fn arc(self: Arc<Self>, n: u32) -> u32 {
        self.id + n
    }

    /// Reference counted.
    #[cache_memoize(key = "receivers:rc:{n}", skip(self))]
    #[allow(clippy::needless_pass_by_value)]
    pub fn rc(self: Rc<Self>, n: u32) -> u32 {
        self.id + n
    }

    /// Pinned.
    #[cache_memoize(key = "receivers:pin:{n}", skip(self))]
    pub fn pinned(self: Pin<&mut Self>, n: u32) -> u32 {
        self.id + n
    }

    /// A keyword name.
    #[cache_memoize(key = "receivers:type:{n}", skip(self))]
    pub fn r#type(&self, n: u32) -> u32 {
        self.id + n
    }

    /// Another keyword name.
    #[cache_memoize(key = "receivers:match:{n}", skip(self))]
    pub fn r#match(&self, n: u32) -> u32 {
        self.id + n
    }

    /// No companions: nothing else is emitted, so this name is free.
    #[cache_memoize(key = "receivers:bare:{n}", skip(self), companions = false)]
    pub fn bare(&self, n: u32) -> u32 {
        self.id + n
    }

    /// Written by hand: would clash with a hint emitted for `bare`.
    #[doc(hidden)]
    pub fn in_a_trait_impl_write_cache_memoize_companions_false_for_bare(&self) -> u32 {
        self.id
    }
}

/// A generic type with a where clause.
#[derive(Debug, Clone, Default)]
pub struct Wrapper<T>(pub T);

impl<T> Wrapper<T>
where
    T: Display + Clone + Send + Sync + 'static,
{
    /// Generic impl, where clause.
    #[cache_memoize(key = "receivers:wrap:{self.0}:{n}")]
    pub fn wrapped(&self, n: u32) -> String {
        format!("{}{n}", self.0)
    }

    /// A second memoized method in the same impl.
    #[cache_memoize(key = "receivers:wrap2:{self.0}:{n}")]
    pub fn wrapped_again(&self, n: u32) -> String {
        format!("{n}{}", self.0)
    }
}

impl Wrapper<u8> {
    /// The same name in another impl of the same generic type.
    #[cache_memoize(key = "receivers:u8:{n}", skip(self))]
    pub fn same_name(&self, n: u32) -> u32 {
        u32::from(self.0) + n
    }
}

impl Wrapper<u16> {
    /// The same name in another impl of the same generic type.
    #[cache_memoize(key = "receivers:u16:{n}", skip(self))]
    pub fn same_name(&self, n: u32) -> u32 {
        u32::from(self.0) + n
    }
}

/// A public trait whose default methods are memoized and which is used as `dyn`.
pub trait Greeter {
    /// Its name.
    fn name(&self) -> String;

    /// Memoized default method, with companions.
    #[cache_memoize(key = "receivers:greet:{n}", skip(self))]
    fn greet(&self, n: u32) -> String {
        self.name().repeat(n as usize)
    }

    /// A second one.
    #[cache_memoize(key = "receivers:wave:{n}", skip(self))]
    fn wave(&self, n: u32) -> String {
        format!("{}~{n}", self.name())
    }

    /// A boxed receiver in a dyn-compatible trait.
    #[cache_memoize(key = "receivers:boxed-greet:{n}", skip(self))]
    #[allow(clippy::boxed_local)]
    fn boxed_greet(self: Box<Self>, n: u32) -> String {
        format!("{}!{n}", self.name())
    }
}

impl Greeter for Shop {
    fn name(&self) -> String {
        format!("shop{}", self.id)
    }

    /// Overridden in a trait impl, with `companions = false` (the documented way).
    #[cache_memoize(key = "receivers:greet-shop:{n}", skip(self), companions = false)]
    fn greet(&self, n: u32) -> String {
        format!("hi{n}")
    }
}

impl dyn Greeter {
    /// An inherent method of a trait object.
    #[cache_memoize(key = "receivers:dyn:{n}", skip(self))]
    pub fn dyn_inherent(&self, n: u32) -> String {
        format!("{}{n}", self.name())
    }
}

/// Everything above, called (the integration test calls this).
pub fn exercise() -> Vec<String> {
    let shop = Shop { id: 1 };
    let mut out = vec![
        shop.by_ref(1).to_string(),
        shop.clone().by_mut(2).to_string(),
        shop.clone().by_value().to_string(),
        Box::new(shop.clone()).boxed(3).to_string(),
        Arc::new(shop.clone()).arc(4).to_string(),
        Rc::new(shop.clone()).rc(5).to_string(),
        Pin::new(&mut shop.clone()).pinned(6).to_string(),
        shop.r#type(7).to_string(),
        shop.r#match(8).to_string(),
        shop.bare(9).to_string(),
        shop.in_a_trait_impl_write_cache_memoize_companions_false_for_bare()
            .to_string(),
        Wrapper("w").wrapped(1),
        Wrapper("w").wrapped_again(2),
        Wrapper(1u8).same_name(1).to_string(),
        Wrapper(1u16).same_name(2).to_string(),
    ];
    let greeter: Box<dyn Greeter> = Box::new(shop.clone());
    out.push(greeter.greet(2));
    out.push(greeter.wave(2));
    out.push(greeter.dyn_inherent(3));
    out.push(greeter.boxed_greet(4));
    out
}
