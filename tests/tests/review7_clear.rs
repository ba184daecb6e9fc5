//! Review 7: `<name>_clear` on methods, generic impls, generic functions and async
//! methods: it clears the values of that function (and instantiation) only.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};

use cache_memoize::{MemoryBackend, cache_memoize, set_backend};
use cache_memoize_tests::{registry_guard, runtime};

static COMPUTED: AtomicU32 = AtomicU32::new(0);

fn computed() -> u32 {
    COMPUTED.load(Ordering::SeqCst)
}

struct Repo<T>(PhantomData<T>);

impl<T: 'static> Repo<T> {
    #[cache_memoize(key = "r7-repo:{id}", skip(self), tags = [])]
    fn load(&self, id: u32) -> u32 {
        COMPUTED.fetch_add(1, Ordering::SeqCst) + id * 1000
    }

    #[cache_memoize(key = "r7-repo-async:{id}", skip(self), tags = ["r7-item:{id}"])]
    async fn load_async(&self, id: u32) -> u32 {
        COMPUTED.fetch_add(1, Ordering::SeqCst) + id * 1000
    }
}

#[cache_memoize(tags = [])]
fn generic<T: 'static>(id: u32) -> u32 {
    COMPUTED.fetch_add(1, Ordering::SeqCst) + id * 1000
}

#[test]
fn clear_clears_its_own_function_and_instantiation() {
    let _guard = registry_guard();
    set_backend(MemoryBackend::new());
    let (bytes, words) = (Repo::<u8>(PhantomData), Repo::<u16>(PhantomData));
    let b = bytes.load(1);
    let w = words.load(1);
    assert_eq!(bytes.load(1), b, "a hit");
    assert_eq!(words.load(1), w, "a hit");
    assert!(bytes.load_clear().is_ok());
    assert_ne!(bytes.load(1), b, "Repo<u8>::load cleared");
    assert_eq!(words.load(1), w, "Repo<u16>::load is another function");

    let g8 = generic::<u8>(2);
    let g16 = generic::<u16>(2);
    assert_eq!(generic::<u8>(2), g8);
    assert!(generic_clear::<u8>().is_ok());
    assert_ne!(generic::<u8>(2), g8, "generic::<u8> cleared");
    assert_eq!(generic::<u16>(2), g16, "generic::<u16> kept");

    runtime().block_on(async {
        let first = bytes.load_async(3).await;
        assert_eq!(bytes.load_async(3).await, first, "a hit");
        assert!(bytes.load_async_clear_async().await.is_ok());
        let second = bytes.load_async(3).await;
        assert_ne!(second, first, "cleared (async)");
        assert_eq!(bytes.load_async(3).await, second, "a hit again");
        assert!(
            cache_memoize::invalidate_tag_async("r7-item:3")
                .await
                .is_ok()
        );
        assert_ne!(bytes.load_async(3).await, second, "its tag moved");
    });
    let _ = computed();
}
