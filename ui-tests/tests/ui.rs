//! Compile tests of `#[cache_memoize]`: every accepted form compiles; every mistake is
//! one error, on the offending token, saying what is valid. See README.md.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
