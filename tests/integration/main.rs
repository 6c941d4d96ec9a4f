//! All integration tests in one binary (one link instead of many).

mod cli_ledger;
mod cli_run;
mod cli_workflows;
mod common;
mod eval;
mod mcp_python;
mod mcp_tools;
mod prop_fold;
mod recovery;
mod review_fixes;
mod schemas;
