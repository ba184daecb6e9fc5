use cache_memoize::cache_memoize;

// On a hit the body does not run: what it changes through a `&mut` is lost.
#[cache_memoize]
fn fill(out: &mut Vec<u32>, n: u32) -> usize {
    out.push(n);
    out.len()
}

struct Counter(u32);

impl Counter {
    #[cache_memoize]
    fn bump(&mut self) -> u32 {
        self.0 += 1;
        self.0
    }
}

fn main() {}
