//! `cargo xtask`: the project's own commands. Each sets up what it needs first.
//!
//! - `setup`  install the pinned toolchains, bpf-linker and the test tools (idempotent)
//! - `build`  build the eBPF object and the `nettune` binary
//! - `image`  the container image (static binary, `FROM scratch`, buildah) as an OCI archive
//! - `run`    build and run `nettune` as root (default arguments: `top`)
//! - `test`   formatting, lints, unit tests, the kernel tests as root, and a 6.1 VM
//! - `vm-test` the kernel tests in Debian's 5.10, 6.1 and 6.12 kernels under qemu (arm64: 6.1, 6.12)
//! - `fmt`    format every crate, the eBPF crates included
//! - `bench`  benchmarks, as root, each against a baseline measured in the same run

mod arch;
mod bench;
mod features;
mod format;
mod image;
mod run;
mod setup;
mod steps;
mod targets;
mod test;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Setup, build, run and test nettune")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need; prints one line per prerequisite.
    Setup,
    /// Build the eBPF object and the `nettune` binary.
    Build {
        /// Build with optimisations (target/release/nettune).
        #[arg(long)]
        release: bool,
        /// Link statically against musl (target/<arch>-unknown-linux-musl/…): the
        /// container image's binary.
        #[arg(long = "static")]
        static_musl: bool,
        /// The static binary's architecture (with --static; default: this
        /// machine's); arm64 on x86-64 is cross-built, linked with rust-lld.
        #[arg(long, value_enum, requires = "static_musl")]
        arch: Option<arch::Arch>,
    },
    /// Build the container image without Docker: a static binary per
    /// architecture in images FROM scratch (buildah), one OCI image index written
    /// to target/image/<name>.oci.tar, this machine's platform alone to
    /// target/image/<name>-<arch>.oci.tar.
    Image {
        /// Image name and tag (default: localhost/nettune:<version>).
        #[arg(long)]
        tag: Option<String>,
        /// Also load this machine's platform into podman or containerd (k8s.io
        /// namespace); repeatable.
        #[arg(long, value_enum)]
        load: Vec<image::LoadInto>,
        /// The index's platforms, comma-separated (the other architecture's
        /// binary is cross-built).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "amd64,arm64")]
        arch: Vec<arch::Arch>,
    },
    /// Build and run `nettune` as root (via sudo when not root); default: `nettune top`.
    Run {
        /// Build with optimisations.
        #[arg(long)]
        release: bool,
        /// Arguments for nettune (default: `top`, the live view with an embedded agent).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Format every crate, the eBPF crates included.
    Fmt,
    /// Run the benchmarks (as root): each figure against a reference from the same
    /// run; writes target/nettune-bench/*.json and regenerates docs/benchmarks.md.
    Bench {
        /// Fewer repetitions and shorter windows (under 3 minutes; the full run
        /// takes about 30).
        #[arg(long)]
        quick: bool,
        /// Run only this section (repeatable): kernel_cost, datapath, footprint,
        /// scale, storm, reaction. The document keeps the others' last results.
        #[arg(long)]
        section: Vec<String>,
        /// Only regenerate docs/benchmarks.md from the results already there.
        #[arg(long)]
        render_only: bool,
    },
    /// Run the whole test suite: fmt, clippy, unit tests, kernel tests.
    Test {
        /// Only run kernel tests whose names contain this text.
        #[arg(long)]
        kernel_filter: Option<String>,
        /// Only the setup and the VM step (Debian's 6.1 under qemu), with its
        /// duration: to check that step without the whole suite.
        #[arg(long, conflicts_with = "kernel_filter")]
        vm_only: bool,
    },
    /// Run the kernel tests inside Debian's kernels under qemu (one boot each),
    /// next to the host's; with `--kernel all` and no filter, rewrite
    /// docs/kernel-support.md.
    VmTest {
        /// Which kernel: 5.10, 6.1, 6.12 or all (arm64: 6.1, 6.12 or all).
        #[arg(long, default_value = "all")]
        kernel: String,
        /// The kernels' architecture: amd64, or arm64 (Debian's arm64 kernels
        /// under qemu-system-aarch64 with an arm64 root, the binaries
        /// cross-built; a subset of the kernel tests without filters).
        #[arg(long, value_enum, default_value = "amd64")]
        arch: arch::Arch,
        /// Look for newer kernel packages than the cached ones.
        #[arg(long)]
        refresh_kernels: bool,
        /// Only run kernel tests whose names contain one of these.
        #[arg(last = true)]
        filters: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::setup(setup::Scope::Everything),
        Command::Build {
            release,
            static_musl,
            arch,
        } => setup::setup(setup::Scope::Build).and_then(|()| {
            let static_for = match (static_musl, arch) {
                (false, _) => None,
                (true, Some(arch)) => Some(arch),
                (true, None) => Some(arch::Arch::this_machine()?),
            };
            run::build_with(release, static_for).map(drop)
        }),

        Command::Image { tag, load, arch } => image::image(tag.as_deref(), &load, &arch).map(drop),
        Command::Run { release, args } => run::run(release, args),
        Command::Test {
            kernel_filter,
            vm_only,
        } => test::test(kernel_filter.as_deref(), vm_only),
        Command::VmTest {
            kernel,
            refresh_kernels,
            filters,
            arch,
        } => vm::vm_test(&kernel, refresh_kernels, &filters, arch),
        Command::Fmt => format::format(false),
        Command::Bench {
            quick,
            section,
            render_only,
        } => bench::bench(quick, &section, render_only),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
