//! Keys by identity (issue 19, item 6): each scenario is a pair of functions whose
//! default keys (or equal `key` templates) used to be one, so that each returned the
//! other's cached value; now each key names its function item.
//!
//! The memoized functions use the registered backend: `tests/keys_memory.rs` runs the
//! scenarios on the embedded in-process store, `tests/keys_redis.rs` on a private
//! Redis server. Each scenario has functions (and counters) of its own.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

use cache_memoize::{backend, cache_memoize};

fn runs(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::SeqCst)
}

fn stored(key: &cache_memoize::CacheKey) -> bool {
    backend().get(key.as_str()).is_ok_and(|v| v.is_some())
}

// 1. Associated functions (no `self`) of two types in one module.

static USERS: AtomicUsize = AtomicUsize::new(0);
static ORDERS: AtomicUsize = AtomicUsize::new(0);

/// A type with an associated function `describe`.
pub struct User;

/// Another type with an associated function `describe`.
pub struct Order;

impl User {
    #[cache_memoize]
    fn describe(id: u32) -> String {
        USERS.fetch_add(1, Ordering::SeqCst);
        format!("user {id}")
    }
}

impl Order {
    #[cache_memoize]
    fn describe(id: u32) -> String {
        ORDERS.fetch_add(1, Ordering::SeqCst);
        format!("order {id}")
    }
}

/// `User::describe(7)` and `Order::describe(7)`: each returns its own value.
pub fn associated_functions_of_two_types_do_not_share() {
    for _ in 0..2 {
        assert_eq!(User::describe(7), "user 7");
        assert_eq!(Order::describe(7), "order 7");
    }
    assert_eq!((runs(&USERS), runs(&ORDERS)), (1, 1));
    assert_eq!(
        User::describe_cache_key(7).as_str(),
        "{cache_memoize_tests::identity_suite::User::describe|7}"
    );
    assert_ne!(User::describe_cache_key(7), Order::describe_cache_key(7));
}

// 2. One generic `impl`, two instantiations.

static TABLES: AtomicUsize = AtomicUsize::new(0);
static LOADS: AtomicUsize = AtomicUsize::new(0);

/// A repository of `T`s.
pub struct Repo<T>(PhantomData<T>);

impl<T> Repo<T> {
    #[cache_memoize]
    fn table(id: u32) -> String {
        TABLES.fetch_add(1, Ordering::SeqCst);
        format!("{}:{id}", std::any::type_name::<T>())
    }

    #[cache_memoize]
    async fn load(id: u32) -> String {
        LOADS.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        format!("{}:{id}", std::any::type_name::<T>())
    }
}

/// `Repo::<u8>::table(7)` and `Repo::<String>::table(7)`: each returns its own value,
/// and the companions (sync and async) address the function's own key.
pub fn instantiations_of_a_generic_impl_do_not_share() {
    for _ in 0..2 {
        assert_eq!(Repo::<u8>::table(7), "u8:7");
        assert_eq!(Repo::<String>::table(7), "alloc::string::String:7");
    }
    assert_eq!(runs(&TABLES), 2);
    assert_eq!(
        Repo::<u8>::table_cache_key(7).as_str(),
        "{cache_memoize_tests::identity_suite::Repo<u8>::table|7}"
    );
    assert!(stored(&Repo::<u8>::table_cache_key(7)));
    assert!(Repo::<u8>::table_invalidate(7).is_ok());
    assert!(!stored(&Repo::<u8>::table_cache_key(7)));
    assert!(stored(&Repo::<String>::table_cache_key(7)));
    assert_eq!(Repo::<u8>::table(7), "u8:7");
    assert_eq!(runs(&TABLES), 3, "the invalidated key is computed again");
    assert!(
        crate::runtime()
            .block_on(Repo::<u8>::table_invalidate_async(7))
            .is_ok()
    );
    assert!(
        !stored(&Repo::<u8>::table_cache_key(7)),
        "the async companion, the same key"
    );
    assert!(stored(&Repo::<String>::table_cache_key(7)));

    crate::runtime().block_on(async {
        for _ in 0..2 {
            assert_eq!(Repo::<u8>::load(1).await, "u8:1");
            assert_eq!(Repo::<u16>::load(1).await, "u16:1");
        }
        assert_eq!(runs(&LOADS), 2);
        assert!(stored(&Repo::<u16>::load_cache_key(1)));
        assert!(Repo::<u16>::load_invalidate(1).is_ok());
        assert!(!stored(&Repo::<u16>::load_cache_key(1)));
        assert_eq!(Repo::<u16>::load(1).await, "u16:1");
        assert_eq!(runs(&LOADS), 3);
        assert!(Repo::<u16>::load_invalidate_async(1).await.is_ok());
        assert!(!stored(&Repo::<u16>::load_cache_key(1)));
        assert_eq!(
            Repo::<u8>::load(1).await,
            "u8:1",
            "another instantiation kept its value"
        );
        assert_eq!(runs(&LOADS), 3);
    });
}

// 3 and 4. Same-named methods of two traits and of the type itself.

static NAMED: AtomicUsize = AtomicUsize::new(0);
static TITLED: AtomicUsize = AtomicUsize::new(0);
static GADGET_NAMED: AtomicUsize = AtomicUsize::new(0);
static INHERENT: AtomicUsize = AtomicUsize::new(0);

/// A trait with a method `label`.
pub trait Named {
    /// A label.
    fn label(&self, n: u32) -> String;
}

/// Another trait with a method `label`.
pub trait Titled {
    /// A label.
    fn label(&self, n: u32) -> String;
}

/// A type with two trait methods named `label`.
pub struct Item;

/// A type with an inherent and a trait method named `label`.
pub struct Gadget;

impl Named for Item {
    #[cache_memoize(skip(self), companions = false)]
    fn label(&self, n: u32) -> String {
        NAMED.fetch_add(1, Ordering::SeqCst);
        format!("named {n}")
    }
}

impl Titled for Item {
    #[cache_memoize(skip(self), companions = false)]
    fn label(&self, n: u32) -> String {
        TITLED.fetch_add(1, Ordering::SeqCst);
        format!("titled {n}")
    }
}

impl Named for Gadget {
    #[cache_memoize(skip(self), companions = false)]
    fn label(&self, n: u32) -> String {
        GADGET_NAMED.fetch_add(1, Ordering::SeqCst);
        format!("named {n}")
    }
}

impl Gadget {
    #[allow(clippy::unused_self)] // the receiver is skipped on purpose
    #[cache_memoize(skip(self))]
    fn label(&self, n: u32) -> String {
        INHERENT.fetch_add(1, Ordering::SeqCst);
        format!("inherent {n}")
    }
}

/// `<Item as Named>::label(7)` and `<Item as Titled>::label(7)`: their own values.
pub fn same_named_methods_of_two_traits_do_not_share() {
    for _ in 0..2 {
        assert_eq!(Named::label(&Item, 7), "named 7");
        assert_eq!(Titled::label(&Item, 7), "titled 7");
    }
    assert_eq!((runs(&NAMED), runs(&TITLED)), (1, 1));
}

/// `Gadget::label(7)` (inherent) and `<Gadget as Named>::label(7)`: their own values.
pub fn an_inherent_and_a_trait_method_do_not_share() {
    for _ in 0..2 {
        assert_eq!(Gadget.label(7), "inherent 7");
        assert_eq!(Named::label(&Gadget, 7), "named 7");
    }
    assert_eq!((runs(&INHERENT), runs(&GADGET_NAMED)), (1, 1));
    assert_eq!(
        Gadget.label_cache_key(7).as_str(),
        "{cache_memoize_tests::identity_suite::Gadget::label|7}"
    );
}

// 5. A trait's provided method, for two implementors.

static SHOUTS: AtomicUsize = AtomicUsize::new(0);

/// A trait whose provided method is memoized.
pub trait Animal {
    /// The animal's sound.
    fn sound() -> &'static str;

    /// The sound, `n` times: memoized once per implementor.
    #[cache_memoize(companions = false)]
    fn shout(n: u32) -> String {
        SHOUTS.fetch_add(1, Ordering::SeqCst);
        Self::sound().repeat(n as usize)
    }
}

/// An animal.
pub struct Dog;

/// Another animal.
pub struct Cat;

impl Animal for Dog {
    fn sound() -> &'static str {
        "woof"
    }
}

impl Animal for Cat {
    fn sound() -> &'static str {
        "meow"
    }
}

/// `Dog::shout(2)` and `Cat::shout(2)`: one provided method, two `Self`s, two values.
pub fn a_provided_method_keys_by_its_implementor() {
    for _ in 0..2 {
        assert_eq!(Dog::shout(2), "woofwoof");
        assert_eq!(Cat::shout(2), "meowmeow");
    }
    assert_eq!(runs(&SHOUTS), 2);
}

// 6. Same-named functions nested in two functions.

static FIRST: AtomicUsize = AtomicUsize::new(0);
static SECOND: AtomicUsize = AtomicUsize::new(0);

fn first(n: u32) -> String {
    #[cache_memoize]
    fn inner(n: u32) -> String {
        FIRST.fetch_add(1, Ordering::SeqCst);
        format!("first {n}")
    }
    inner(n)
}

fn second(n: u32) -> String {
    #[cache_memoize]
    fn inner(n: u32) -> String {
        SECOND.fetch_add(1, Ordering::SeqCst);
        format!("second {n}")
    }
    inner(n)
}

/// `first`'s `inner(7)` and `second`'s `inner(7)`: their own values.
pub fn nested_functions_of_one_name_do_not_share() {
    for _ in 0..2 {
        assert_eq!(first(7), "first 7");
        assert_eq!(second(7), "second 7");
    }
    assert_eq!((runs(&FIRST), runs(&SECOND)), (1, 1));
}

// 7. One `key` template on two functions; `shared_key` to share on purpose.

static PRICES: AtomicUsize = AtomicUsize::new(0);
static STOCKS: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(key = "item:{id}")]
fn price(id: u32) -> u64 {
    PRICES.fetch_add(1, Ordering::SeqCst);
    u64::from(id) * 100
}

#[cache_memoize(key = "item:{id}")]
fn stock(id: u32) -> u64 {
    STOCKS.fetch_add(1, Ordering::SeqCst);
    u64::from(id) + 1
}

/// `price(7)` and `stock(7)`, both `key = "item:{id}"`: their own values.
pub fn one_template_on_two_functions_does_not_share() {
    for _ in 0..2 {
        assert_eq!(price(7), 700);
        assert_eq!(stock(7), 8);
    }
    assert_eq!((runs(&PRICES), runs(&STOCKS)), (1, 1));
    assert_eq!(
        price_cache_key(7).as_str(),
        "{cache_memoize_tests::identity_suite::price|item:7}"
    );
}

static WARMED: AtomicUsize = AtomicUsize::new(0);
static READ: AtomicUsize = AtomicUsize::new(0);

#[cache_memoize(key = "report:{day}", shared_key)]
fn warm_report(day: u32) -> String {
    WARMED.fetch_add(1, Ordering::SeqCst);
    format!("report {day}")
}

#[cache_memoize(key = "report:{day}", shared_key)]
async fn read_report(day: u32) -> String {
    READ.fetch_add(1, Ordering::SeqCst);
    format!("report {day}")
}

/// `shared_key`: the template is the whole key, so two functions (and the function
/// form) share it on purpose.
pub fn shared_key_shares_on_purpose() {
    assert_eq!(warm_report_cache_key(3).as_str(), "{report:3}");
    assert_eq!(warm_report(3), "report 3");
    crate::runtime().block_on(async {
        assert_eq!(read_report(3).await, "report 3");
    });
    assert_eq!(
        (runs(&WARMED), runs(&READ)),
        (1, 0),
        "read what warm stored"
    );
    assert!(cache_memoize::invalidate("report:3").is_ok());
    assert!(!stored(&read_report_cache_key(3)));
}

/// Calls `$callback!` with every scenario's name.
#[macro_export]
macro_rules! identity_scenarios {
    ($callback:ident) => {
        $callback!(
            associated_functions_of_two_types_do_not_share,
            instantiations_of_a_generic_impl_do_not_share,
            same_named_methods_of_two_traits_do_not_share,
            an_inherent_and_a_trait_method_do_not_share,
            a_provided_method_keys_by_its_implementor,
            nested_functions_of_one_name_do_not_share,
            one_template_on_two_functions_does_not_share,
            shared_key_shares_on_purpose
        );
    };
}
