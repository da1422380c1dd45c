//! The `kitt` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    kitt::cli::main()
}
