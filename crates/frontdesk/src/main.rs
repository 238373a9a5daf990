// The binary's allocator. A library never sets one: an embedding app chooses its own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    frontdesk::cli::main()
}
