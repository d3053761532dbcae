//! Helpers shared by the integration tests and, through `src/test_support.rs`, the unit
//! tests.

use std::io::Write;

/// Says, in the test run's own output, that the calling test was skipped for want of a wgpu
/// device, and why.
///
/// libtest captures `print!`/`eprint!` of a passing test and shows nothing, so a skipped test
/// would read as a plain `ok`; a write to the stderr handle itself is not captured.
pub fn skipped(why: &str) {
    skipped_unless(why, "TRAINER_REQUIRE_WGPU");
}

/// Says that the calling test was skipped and why; `require` is the variable that would make
/// it fail instead.
pub fn skipped_unless(why: &str, require: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (set {require}=1 to make this fail)"
    );
}
