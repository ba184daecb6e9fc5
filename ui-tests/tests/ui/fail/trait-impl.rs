use cache_memoize::cache_memoize;

trait Shape {
    fn area(&self) -> u64;
}

struct Square(u32);

impl std::fmt::Display for Square {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "square-{}", self.0)
    }
}

impl Shape for Square {
    #[cache_memoize]
    fn area(&self) -> u64 {
        u64::from(self.0 * self.0)
    }
}

fn main() {}
