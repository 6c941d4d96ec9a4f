fn main() {
    std::process::exit(torc_ledger::cli::main());
}
