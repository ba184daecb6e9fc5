use cache_memoize::cache_memoize;

#[cache_memoize]
fn shown() -> impl std::fmt::Display {
    1
}

#[cache_memoize]
fn no_item_type() -> impl Iterator + Send {
    0..10_u32
}

struct Opaque;

#[cache_memoize]
fn items_not_serializable() -> impl Iterator<Item = Opaque> {
    std::iter::empty()
}

fn main() {}
