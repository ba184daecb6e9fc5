//! Keys by identity (issue 19): the attribute compiles wherever a function item can
//! be, and `shared_key` beside a template.
use std::fmt::Display;
use std::marker::PhantomData;

use cache_memoize::cache_memoize;

struct Repo<T>(PhantomData<T>);

impl<T: Default + Display> Repo<T> {
    #[cache_memoize]
    fn table(id: u32) -> String {
        format!("{}:{id}", T::default())
    }

    #[cache_memoize(key = "rows:{id}:{tag}")]
    async fn rows(id: u32, tag: impl Display) -> Vec<String> {
        vec![format!("{tag}:{id}")]
    }
}

struct Grid<const C: char>;

impl<const C: char> Grid<C> {
    #[cache_memoize]
    fn cell(n: u8) -> String {
        C.to_string().repeat(usize::from(n))
    }
}

struct Borrowed<'a>(&'a str);

impl Display for Borrowed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl<'a> Borrowed<'a> {
    #[cache_memoize(refresh = "inline", stale = "1m")]
    fn upper(&self) -> String {
        self.0.to_uppercase()
    }
}

trait Animal {
    fn sound() -> &'static str;

    #[cache_memoize(companions = false)]
    fn shout(n: u32) -> String {
        Self::sound().repeat(n as usize)
    }
}

struct Dog;

impl Animal for Dog {
    fn sound() -> &'static str {
        "woof"
    }
}

// A default method with its companions: the trait stays dyn compatible.
trait Named {
    fn name(&self) -> String;

    #[cache_memoize(key = "greet:{n}", skip(self))]
    fn greet(&self, n: u32) -> String {
        self.name().repeat(n as usize)
    }
}

impl Named for Dog {
    fn name(&self) -> String {
        "rex".into()
    }
}

trait Shape {
    fn sides(&self) -> u8;
}

impl dyn Shape {
    #[cache_memoize]
    fn named(n: u8) -> String {
        format!("{n} sides")
    }
}

#[cache_memoize]
fn r#type(n: u8) -> u8 {
    n
}

fn outer() -> u8 {
    #[cache_memoize]
    fn inner(n: u8) -> u8 {
        n + 1
    }
    inner(1) + inner_cache_key(1).as_str().len() as u8
}

#[cache_memoize(key = "rate:{currency}", shared_key)]
fn rate(currency: &str) -> u32 {
    currency.len() as u32
}

#[cache_memoize(key = "parsed:{s}", shared_key, expire = "1m")]
fn parsed<T: std::str::FromStr + serde::Serialize + for<'de> serde::Deserialize<'de> + Default>(
    s: &str,
) -> T {
    s.parse().unwrap_or_default()
}

fn main() {
    let _ = Repo::<u8>::table(1);
    let _ = Repo::<u8>::table_cache_key(1);
    let _ = Repo::<u8>::rows(1, "x");
    let _ = Repo::<String>::rows_invalidate(1, 2_u8);
    let _ = Grid::<'|'>::cell(2);
    let _ = Borrowed("a").upper();
    let _ = Dog::shout(2);
    let named: Box<dyn Named> = Box::new(Dog);
    let _ = named.greet(2);
    let _ = named.greet_cache_key(2);
    let _ = <dyn Shape>::named(3);
    let _ = r#type(1);
    let _ = r#type_cache_key(1);
    let _ = outer();
    let _ = rate("eur");
    let _: u32 = parsed("7");
}
