//! Keys that cannot lie (issue 10), on the embedded in-process store.

macro_rules! on_memory {
    ($($scenario:ident),* $(,)?) => {
        $(
            #[test]
            fn $scenario() {
                cache_memoize_tests::keys_suite::$scenario();
            }
        )*
    };
}

cache_memoize_tests::key_scenarios!(on_memory);
