//! Writes the man pages and shell completions the Debian package ships,
//! generated from the clap definitions in `dkim_sidecar::cli`:
//!
//! ```text
//! cargo run --example gen-docs -- OUTDIR
//! OUTDIR/man/dkim-sidecar.1, dkim-sidecar-run.1, dkim-sidecar-keygen.1, ...
//! OUTDIR/completions/dkim-sidecar.bash, _dkim-sidecar (zsh), dkim-sidecar.fish
//! ```
//!
//! An example rather than a build script or a hidden subcommand: nothing
//! about it slows an ordinary build or ends up in the installed binary
//! (clap_mangen and clap_complete are dev-dependencies), and `.ci/package`
//! runs it just before `cargo deb`.

use std::path::{Path, PathBuf};

use clap::CommandFactory as _;
use clap_complete::Shell;
use dkim_sidecar::cli::Cli;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args_os().nth(1).expect("usage: gen-docs OUTDIR"));
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;

    let mut cli = Cli::command();
    cli.build();
    write_man(&cli, "dkim-sidecar", &man)?;
    for sub in cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        // clap takes static names (without its "string" feature); this
        // program runs once and exits.
        let name: &'static str = format!("dkim-sidecar-{}", sub.get_name()).leak();
        let sub = sub.clone().name(name).display_name(name);
        write_man(&sub, name, &man)?;
    }

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cli, "dkim-sidecar", &completions)?;
        println!("{}", path.display());
    }
    Ok(())
}

fn write_man(command: &clap::Command, name: &str, dir: &Path) -> std::io::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .title(name.to_uppercase())
        .section("1")
        .source(format!("dkim-sidecar {}", env!("CARGO_PKG_VERSION")))
        .manual("dkim-sidecar manual")
        .render(&mut page)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page)?;
    println!("{}", path.display());
    Ok(())
}
