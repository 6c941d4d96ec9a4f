//! All integration tests in one binary (one link instead of many).

mod cli_ledger;
mod cli_run;
mod cli_workflows;
mod common;
mod prop_fold;
mod schemas;
