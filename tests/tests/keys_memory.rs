//! Keys that cannot lie (issue 10) and keys by identity (issue 19), on the embedded
//! in-process store.

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

macro_rules! identity_on_memory {
    ($($scenario:ident),* $(,)?) => {
        $(
            #[test]
            fn $scenario() {
                cache_memoize_tests::identity_suite::$scenario();
            }
        )*
    };
}

cache_memoize_tests::identity_scenarios!(identity_on_memory);
