//! Compile-fail tests of `#[hook]`: one mistake per file, each with the
//! message it must give (`tests/ui/*.stderr`).

#[test]
fn hook_ui_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
