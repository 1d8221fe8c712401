//! Running programs from a test: ours and the reference tools. A missing
//! program fails the test with the Debian package to install; nothing is
//! skipped.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `program`, failing the test if it is not installed.
pub fn run(program: &str, package: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| {
            panic!("{program} must be installed (Debian package {package}): {err}")
        })
}

/// Runs `program` and requires success.
pub fn run_ok(program: &str, package: &str, args: &[&str], dir: &Path) -> Output {
    let out = run(program, package, args, dir);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs our binary (see [`crate::binary`]).
pub fn sidecar(args: &[&str], dir: &Path) -> Output {
    Command::new(crate::binary())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the dkim-sidecar binary is built by cargo test")
}

/// A program's standard output, lossily as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A program's standard error, lossily as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
