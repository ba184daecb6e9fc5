use cache_memoize::cache_memoize;

struct Shop {
    id: u32,
}

impl std::fmt::Display for Shop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shop-{}", self.id)
    }
}

impl Shop {
    #[cache_memoize(key = "shop:{self}:report:{day}")]
    fn report(&self, day: u32) -> String {
        format!("{} {day}", self.id)
    }

    #[cache_memoize(lock)]
    fn by_default_key(&self, day: u32) -> u32 {
        self.id + day
    }

    #[cache_memoize(key = "consumed:{self}")]
    fn consume(self) -> u32 {
        self.id
    }

    #[cache_memoize(key = "associated:{n}")]
    fn associated(n: u32) -> u32 {
        n
    }

    #[cache_memoize(key = "async-method:{self.id}:{day}")]
    async fn fetch(&self, day: u32) -> u32 {
        self.id + day
    }
}

fn main() {
    let shop = Shop { id: 1 };
    let _ = shop.report(1);
    let _ = shop.report_cache_key(1);
    let _ = shop.by_default_key(1);
    let _ = Shop::associated(2);
    let _ = Shop::associated_cache_key(2);
    let _ = shop.consume_cache_key();
    let _ = shop.fetch(3);
    let _ = shop.consume();
}
