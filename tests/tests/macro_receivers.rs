//! The methods of `cache_memoize_tests::receivers` (from review 5) (every receiver, a
//! generic impl with a where clause, keyword names, a `dyn` trait's default methods,
//! `companions = false`) compile under strict lints and work.

#[test]
fn every_receiver_and_impl_shape_compiles_and_memoizes() {
    let first = cache_memoize_tests::receivers::exercise();
    let again = cache_memoize_tests::receivers::exercise();
    assert_eq!(first, again);
    assert_eq!(
        first,
        [
            "2", "2", "1", "4", "5", "6", "7", "8", "9", "10", "1", "w1", "2w", "2", "3", "hi2",
            "shop1~2", "shop13", "shop1!4"
        ]
    );
}
