use cache_memoize::cache_memoize;

// A `&mut` that reaches the attribute as a macro's `$t:ty` (a `Type::Group`) is still
// a `&mut`: its change would be lost on a hit.
macro_rules! filler {
    ($name:ident, $out:ty) => {
        #[cache_memoize]
        fn $name(out: $out, n: u32) -> usize {
            out.push(n);
            out.len()
        }
    };
}

filler!(fill_through_macro, &mut Vec<u32>);

struct Counter(u32);

#[allow(clippy::needless_arbitrary_self_type)]
impl Counter {
    // The receiver's type written out.
    #[cache_memoize(key = "bump:{self.0}")]
    fn bump(self: &mut Self) -> u32 {
        self.0 += 1;
        self.0
    }
}

fn main() {}
