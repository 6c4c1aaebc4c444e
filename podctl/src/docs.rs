//! Shell completions (`podctl completion SHELL`) and man pages (`podctl
//! man DIR`), generated from the command-line definition itself, so they
//! never drift from it. The Debian package ships both
//! (`scripts/package.sh` generates them from the binary it packages).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use crate::cli::Cli;

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

pub fn completion(a: CompletionArgs) -> anyhow::Result<()> {
    clap_complete::generate(
        a.shell,
        &mut Cli::command(),
        "podctl",
        &mut std::io::stdout(),
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory the pages are written to (`podctl.1`, `podctl-run.1`, ...).
    pub dir: PathBuf,
}

pub fn man(a: ManArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &a.dir)
        .with_context(|| format!("writing man pages to {}", a.dir.display()))
}
