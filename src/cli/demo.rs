//! `demo`: placeholder replaced below.
use super::{Cli, CliResult};
use clap::Args;
#[derive(Args, Debug)]
pub struct DemoArgs {}
pub fn demo(_cli: &Cli, _a: &DemoArgs) -> CliResult { Ok(0) }
