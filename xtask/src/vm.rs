//! `cargo xtask vm-test`: the kernel tests inside Debian's own kernels, booted under
//! qemu's software emulation with virtme-ng, next to the host's kernel.
//!
//! 1. Tools: qemu-system-x86 (keeping the machine's qemu-utils), kmod, udev,
//!    busybox-static and python3-venv from apt; virtme-ng in a venv under
//!    `target/vm/venv`.
//! 2. Kernels: for each series, the newest Debian package, found and downloaded
//!    through a private apt configuration (`target/vm/apt`, sources taken from the
//!    system's own) that leaves the system's apt state alone, unpacked into
//!    `target/vm/kernels/<series>` with depmod run. A later run finds it there and
//!    downloads nothing (`--refresh-kernels` looks for newer packages).
//! 3. The kernel test binary and `nettune`, built once on the host: the guest sees
//!    the host's filesystem read-only and runs them from `target/`.
//! 4. One boot per kernel, running the whole selection: bpffs mounted,
//!    `nf_conntrack` loaded (as kube-proxy has it on a node), the tests run with
//!    `NETTUNE_REQUIRE_FEATURES` set to what that kernel has (a skip of one of those
//!    fails), results written to `target/vm/results/<series>` (an `--rwdir`).
//! 5. A report per kernel and per test, and `summary: N passed, N failed, N
//!    skipped`. With `--kernel all` and no filter, the host runs the same
//!    selection and `docs/kernel-support.md` is rewritten from all the results.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

use crate::{
    process::{self, output},
    setup::{self, PipTool},
};

/// A Debian kernel series the matrix boots.
pub struct Series {
    /// `5.10`, `6.1`, `6.12`: what `--kernel` takes.
    pub name: &'static str,
    /// Where Debian ships it.
    debian: &'static str,
    /// The package name around its ABI number: (before, after).
    package: (&'static str, &'static str),
    /// What this kernel has, as `NETTUNE_REQUIRE_FEATURES` names it: a test that
    /// skips for one of these fails.
    features: &'static str,
}

/// The kernels of the matrix. Every series is the newest package of its line.
pub const SERIES: [Series; 3] = [
    Series {
        name: "5.10",
        debian: "Debian 11, bullseye-security",
        package: ("linux-image-5.10.0-", "-amd64"),
        // No TCX (6.6), no drop reasons (5.17).
        features: "root,btf,tp_btf,tracepoint,tc,clsact,fentry,kprobe,netem",
    },
    Series {
        name: "6.1",
        debian: "Debian 12, bookworm-security",
        package: ("linux-image-6.1.0-", "-amd64"),
        // No TCX; fentry is refused (ENOTSUPP at attach) on
        // tcp_v{4,6}_syn_recv_sock, so the listen signal takes kprobes. (Not for
        // their six arguments: fentry on __sys_sendto, six too, attaches.)
        features: "root,btf,tp_btf,tracepoint,tc,clsact,kprobe,netem,drop_reasons",
    },
    Series {
        name: "6.12",
        debian: "Debian 12, bookworm-security",
        package: ("linux-image-6.12.", "+deb12-amd64-unsigned"),
        features: "root,btf,tp_btf,tracepoint,tc,tcx,clsact,fentry,kprobe,netem,drop_reasons",
    },
];

/// Tests the VMs leave out, and why: they exercise nothing that differs between
/// kernels, and cost minutes under software emulation (≈15× slower).
pub const NOT_IN_VMS: [(&str, &str); 4] = [
    (
        "deploy::",
        "manifests, alert rules and configs checked in user space: nothing kernel-specific",
    ),
    (
        "top::",
        "the terminal UI in tmux: nothing kernel-specific, minutes under emulation",
    ),
    (
        "pods::",
        "containerd, CRI names and images in user space; the kernel paths under them \
         (veth traffic, tc drops, retransmits, somaxconn) are the other tests'",
    ),
    (
        "exporter::hundreds_of_namespaces",
        "series caps in user space: nothing kernel-specific; 300 namespaces and \
         20 000 connects take many minutes under emulation",
    ),
];

/// The kernel `cargo xtask test` boots: Debian 12's, the most common production
/// kernel, and one without TCX.
pub const CI_SERIES: &str = "6.1";

/// The tests `cargo xtask test` runs in that VM (a few minutes under emulation):
/// the paths the host cannot take — per-socket listen overflows under kprobes,
/// pod traffic on clsact and its clean detach, netem loss, drop reasons from this
/// kernel's BTF with `NOT_SPECIFIED` = 1, every variant's verdict.
pub const CI_TESTS: [&str; 8] = [
    "listen::kprobe_per_socket",
    "listen::fentry_per_socket",
    "traffic::clsact_",
    "retransmit::under_netem",
    "drops::netem_loss",
    "drops::packet_socket",
    "drops::reason_names",
    "probes::every_variant",
];

/// Most a boot running the whole selection may take before its qemu is killed.
const FULL_SUITE_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Most a boot running [`CI_TESTS`] may take.
const CI_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// virtme-ng, which boots a kernel with the host's filesystem as its root. The
/// guest runs the venv's own init script, so the venv must be on the host
/// filesystem; `/usr/bin/python3` is Debian's, not a shim.
const VIRTME_NG: PipTool = PipTool {
    label: "virtme-ng",
    requirement: "virtme-ng==1.42",
    venv: "target/vm/venv",
    exe: "vng",
    python: "/usr/bin/python3",
};

/// Debian packages the VMs need on the host. `udev` is not optional: without it
/// virtme-ng loses the guest's output and exit code.
const VM_PACKAGES: [&str; 5] = [
    "qemu-system-x86",
    "kmod",
    "udev",
    "busybox-static",
    "python3-venv",
];

/// `target/vm`.
fn vm_dir() -> PathBuf {
    xtask::workspace_root().join("target/vm")
}

/// Which tests a run selects: harness filters (any may match; none: all) and
/// `--skip` filters.
#[derive(Clone)]
pub struct Selection {
    filters: Vec<String>,
    skips: Vec<String>,
}

impl Selection {
    /// What `vm-test` runs for `filters`: those tests, or, without filters, every
    /// test but [`NOT_IN_VMS`].
    pub fn for_vms(filters: &[String]) -> Self {
        let skips = if filters.is_empty() {
            NOT_IN_VMS.iter().map(|(f, _)| (*f).to_owned()).collect()
        } else {
            Vec::new()
        };
        Self {
            filters: filters.to_vec(),
            skips,
        }
    }

    /// What it selects, in words.
    fn describe(&self) -> String {
        match (self.filters.is_empty(), self.skips.is_empty()) {
            (true, true) => "every kernel test".to_owned(),
            (true, false) => format!("every kernel test but {}", self.skips.join(", ")),
            (false, _) => format!("kernel tests matching {}", self.filters.join(", ")),
        }
    }

    /// The kernel test binary's arguments for this selection.
    fn args(&self) -> Vec<String> {
        let skips = self
            .skips
            .iter()
            .flat_map(|s| ["--skip".to_owned(), s.clone()]);
        self.filters.iter().cloned().chain(skips).collect()
    }
}

/// `cargo xtask vm-test --kernel KERNEL [--refresh-kernels] [-- FILTER…]`.
pub fn vm_test(kernel: &str, refresh: bool, filters: &[String]) -> anyhow::Result<()> {
    let series: Vec<&Series> = if kernel == "all" {
        SERIES.iter().collect()
    } else {
        vec![find_series(kernel)?]
    };
    setup::setup(setup::Scope::Everything)?;
    ensure_vm_tools()?;
    let mut apt = LazyApt::default();
    // A kernel that cannot be had (e.g. Debian 11's archive unreachable) is
    // reported as not run, and the others still run.
    let kernels: Vec<(&Series, anyhow::Result<KernelImage>)> = series
        .iter()
        .map(|s| (*s, KernelImage::fetch(s, refresh, &mut apt)))
        .collect();
    let binaries = Binaries::build()?;
    let selection = Selection::for_vms(filters);
    let mut runs = Vec::new();
    for (series, kernel) in &kernels {
        runs.push(match kernel {
            Ok(kernel) => boot(kernel, &binaries, &selection, FULL_SUITE_TIMEOUT)?,
            Err(e) => {
                println!("vm {}: not run: {e:#}", series.name);
                RunResult::not_run(series.name, format!("not run: {e:#}"))
            }
        });
    }
    let whole_matrix = kernel == "all" && filters.is_empty();
    if whole_matrix {
        runs.insert(0, host_run(&binaries, &selection)?);
    }
    print_report(&runs);
    if whole_matrix {
        let path = xtask::workspace_root().join("docs/kernel-support.md");
        std::fs::write(&path, kernel_support_doc(&runs))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("vm-test: rewrote {}", path.display());
    } else {
        println!(
            "vm-test: docs/kernel-support.md left as it is (it is rewritten by \
             `cargo xtask vm-test --kernel all` without a filter)"
        );
    }
    let (passed, failed, skipped) = totals(&runs);
    println!("\nsummary: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        bail!("{failed} kernel test(s) failed in the matrix");
    }
    Ok(())
}

fn find_series(name: &str) -> anyhow::Result<&'static Series> {
    SERIES.iter().find(|s| s.name == name).with_context(|| {
        let names: Vec<&str> = SERIES.iter().map(|s| s.name).collect();
        format!("--kernel {name}: not one of {} or all", names.join(", "))
    })
}

/// What `cargo xtask test`'s VM step found.
pub enum CiVm {
    /// The VM ran the selection: its results.
    Ran(RunResult),
    /// The VM could not be set up or did not start: why.
    CannotStart(String),
}

/// Boots [`CI_SERIES`] and runs [`CI_TESTS`] in it (setting up what it needs;
/// the kernel test binary and nettune are built already, so building is a no-op).
pub fn ci_vm() -> CiVm {
    let attempt = || -> anyhow::Result<RunResult> {
        ensure_vm_tools()?;
        let kernel = KernelImage::fetch(find_series(CI_SERIES)?, false, &mut LazyApt::default())?;
        let binaries = Binaries::build()?;
        let selection = Selection {
            filters: CI_TESTS.iter().map(|t| (*t).to_owned()).collect(),
            skips: Vec::new(),
        };
        boot(&kernel, &binaries, &selection, CI_TIMEOUT)
    };
    match attempt() {
        Ok(run) => match &run.problem {
            Some(problem) if run.tests.is_empty() => CiVm::CannotStart(problem.clone()),
            _ => CiVm::Ran(run),
        },
        Err(e) => CiVm::CannotStart(format!("{e:#}")),
    }
}

/// Installs what booting a kernel needs (idempotent, one line per step).
fn ensure_vm_tools() -> anyhow::Result<()> {
    // A plain install of qemu-system-x86 would remove a qemu-utils from another
    // release (this machine kind has one from backports): naming the release's own
    // qemu-utils keeps one installed.
    let codename = os_codename()?;
    let keep_qemu_utils = format!("qemu-utils/{codename}");
    setup::ensure_packages_with(
        "VM tools",
        &VM_PACKAGES,
        &["--allow-downgrades", &keep_qemu_utils],
    )?;
    VIRTME_NG.ensure()
}

/// `VERSION_CODENAME` from /etc/os-release (e.g. `bookworm`).
fn os_codename() -> anyhow::Result<String> {
    let text = std::fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_owned())
        .filter(|c| !c.is_empty())
        .context("/etc/os-release names no VERSION_CODENAME: is this Debian?")
}

/// The Debian archive and its security archive, as the system's apt sources name
/// them.
#[derive(Debug, PartialEq, Eq)]
struct Archives {
    main: String,
    security: String,
}

impl Archives {
    /// From `/etc/apt/sources.list.d/*.sources` (deb822) and
    /// `/etc/apt/sources.list` (one-line format).
    fn from_system() -> anyhow::Result<Self> {
        let mut entries = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
            for entry in dir.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "sources") {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    entries.extend(parse_deb822(&text));
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string("/etc/apt/sources.list") {
            entries.extend(parse_one_line(&text));
        }
        Self::from_entries(&entries)
    }

    /// The first archive with a plain suite, and the first with a `-security` one.
    fn from_entries(entries: &[(String, String)]) -> anyhow::Result<Self> {
        let find = |security: bool| {
            entries
                .iter()
                .find(|(_, suite)| suite.ends_with("-security") == security)
                .map(|(uri, _)| uri.trim_end_matches('/').to_owned())
        };
        Ok(Self {
            main: find(false).context(
                "the system's apt sources name no Debian archive (looked in \
                 /etc/apt/sources.list.d/*.sources and /etc/apt/sources.list)",
            )?,
            security: find(true).context(
                "the system's apt sources name no security archive: the newest 6.1 \
                 and every 6.12 kernel package are only in bookworm-security",
            )?,
        })
    }
}

/// (URI, suite) pairs of `deb` stanzas in a deb822 sources file.
fn parse_deb822(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
                .unwrap_or_default()
        };
        if !field("Types").split_whitespace().any(|t| t == "deb") || field("Enabled") == "no" {
            continue;
        }
        for uri in field("URIs").split_whitespace() {
            for suite in field("Suites").split_whitespace() {
                out.push((uri.to_owned(), suite.to_owned()));
            }
        }
    }
    out
}

/// (URI, suite) pairs of `deb` lines in a one-line-format sources.list.
fn parse_one_line(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("deb ")?;
            // Options in brackets come before the URI.
            let rest = match rest.trim_start().strip_prefix('[') {
                Some(options) => options.split_once(']')?.1,
                None => rest,
            };
            let mut words = rest.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

/// An apt configuration of our own under `target/vm/apt`: its own sources, lists,
/// caches and an empty dpkg status, so nothing of the system's apt state changes.
struct PrivateApt {
    config: PathBuf,
}

/// The suites the matrix's kernels come from.
const SUITES: [(&str, bool); 4] = [
    ("bookworm", false),
    ("bookworm-security", true),
    ("bullseye", false),
    ("bullseye-security", true),
];

impl PrivateApt {
    /// Writes the configuration (sources from the system's archives).
    fn new() -> anyhow::Result<Self> {
        let dir = vm_dir().join("apt");
        for sub in ["lists/partial", "archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let archives = Archives::from_system()?;
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let mut sources = String::new();
        for (suite, security) in SUITES {
            let uri = if security {
                &archives.security
            } else {
                &archives.main
            };
            writeln!(sources, "deb [signed-by={keyring}] {uri} {suite} main")?;
        }
        let sources_path = dir.join("sources.list");
        std::fs::write(&sources_path, sources)?;
        let user = output(Command::new("id").arg("-un")).unwrap_or_else(|| "root".to_owned());
        let d = dir.display();
        let config = format!(
            "Dir::Etc::sourcelist \"{}\";\n\
             Dir::Etc::sourceparts \"-\";\n\
             Dir::State::lists \"{d}/lists\";\n\
             Dir::State::status \"/dev/null\";\n\
             Dir::Cache::archives \"{d}/archives\";\n\
             Dir::Cache::pkgcache \"{d}/pkgcache.bin\";\n\
             Dir::Cache::srcpkgcache \"{d}/srcpkgcache.bin\";\n\
             APT::Sandbox::User \"{user}\";\n\
             Acquire::Languages \"none\";\n\
             Acquire::IndexTargets::deb::DEP-11::DefaultEnabled \"false\";\n\
             Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled \"false\";\n\
             Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled \"false\";\n",
            sources_path.display()
        );
        let config_path = dir.join("apt.conf");
        std::fs::write(&config_path, config)?;
        Ok(Self {
            config: config_path,
        })
    }

    /// An apt command that uses only this configuration.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("APT_CONFIG", &self.config)
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// Fetches the package lists of every suite into our own lists directory.
    fn update(&self) -> anyhow::Result<()> {
        process::captured(self.command("apt-get").args(["update", "-q"]))
            .with_context(|| {
                format!(
                    "updating the private apt lists ({}) failed: is the Debian archive reachable?",
                    self.config.display()
                )
            })
            .map(drop)
    }

    /// The newest package named `<before><number><after>`, with its version.
    fn newest(&self, (before, after): (&str, &str)) -> anyhow::Result<(String, String)> {
        let names =
            output(self.command("apt-cache").args(["pkgnames", before])).unwrap_or_default();
        let newest = names
            .lines()
            .filter_map(|name| {
                let number = name.strip_prefix(before)?.strip_suffix(after)?;
                Some((number.parse::<u64>().ok()?, name.to_owned()))
            })
            .max()
            .map(|(_, name)| name)
            .with_context(|| format!("no package {before}N{after} in the private apt lists"))?;
        let shown = output(
            self.command("apt-cache")
                .args(["show", "--no-all-versions", &newest]),
        )
        .with_context(|| format!("apt-cache show {newest} failed"))?;
        let version = shown
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .with_context(|| format!("apt-cache show {newest}: no Version"))?
            .to_owned();
        Ok((newest, version))
    }

    /// Downloads `package` into `dir` (apt checks it against the signed lists);
    /// returns the .deb's path.
    fn download(&self, package: &str, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        process::captured(
            self.command("apt-get")
                .args(["download", "-q", package])
                .current_dir(dir),
        )?;
        let prefix = format!("{package}_");
        std::fs::read_dir(dir)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
            .with_context(|| {
                format!(
                    "apt-get download left no {prefix}*.deb in {}",
                    dir.display()
                )
            })
    }
}

/// The private apt configuration, written and updated on first use only: a run
/// whose kernels are all cached never contacts the archive.
#[derive(Default)]
struct LazyApt(Option<PrivateApt>);

impl LazyApt {
    fn get(&mut self) -> anyhow::Result<&PrivateApt> {
        if self.0.is_none() {
            let apt = PrivateApt::new()?;
            println!("setup: kernel packages: updating the private apt lists (target/vm/apt)");
            apt.update()?;
            self.0 = Some(apt);
        }
        self.0.as_ref().context("private apt configuration")
    }
}

/// A kernel unpacked in the cache, as virtme-ng wants it: `boot/vmlinuz-<release>`
/// next to `lib/modules/<release>`.
struct KernelImage {
    series: &'static Series,
    dir: PathBuf,
    release: String,
    /// `<package> <version>`.
    package: String,
}

/// The file in a cached kernel's directory naming its package; written last.
const PACKAGE_FILE: &str = "package";

impl KernelImage {
    /// The cached kernel of `series`, or the newest package downloaded and
    /// unpacked now (also when `refresh` finds a newer one).
    fn fetch(series: &'static Series, refresh: bool, apt: &mut LazyApt) -> anyhow::Result<Self> {
        let dir = vm_dir().join("kernels").join(series.name);
        let label = format!("setup: kernel {} ({})", series.name, series.debian);
        let cached = Self::cached(series, &dir);
        if !refresh && let Some(kernel) = cached {
            println!("{label}: {} (cached in target/vm/kernels)", kernel.package);
            return Ok(kernel);
        }
        let apt = apt.get()?;
        let (package, version) = apt.newest(series.package)?;
        let wanted = format!("{package} {version}");
        if let Some(kernel) = cached.filter(|k| k.package == wanted) {
            println!("{label}: {wanted} (cached, still the newest)");
            return Ok(kernel);
        }
        println!("{label}: downloading {wanted}");
        let deb = apt.download(&package, &vm_dir().join("debs"))?;
        let partial = vm_dir()
            .join("kernels")
            .join(format!("{}.partial", series.name));
        if partial.exists() {
            std::fs::remove_dir_all(&partial)?;
        }
        std::fs::create_dir_all(&partial)?;
        process::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
        let release = only_entry(&partial.join("lib/modules"))?;
        ensure!(
            partial
                .join("boot")
                .join(format!("vmlinuz-{release}"))
                .exists(),
            "{package} has no boot/vmlinuz-{release}"
        );
        // virtme-ng would run depmod on the first boot and write into the cache.
        process::run(
            Command::new("depmod")
                .args(["-a", "-b"])
                .arg(&partial)
                .arg(&release),
        )?;
        std::fs::write(partial.join(PACKAGE_FILE), &wanted)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::rename(&partial, &dir)?;
        std::fs::remove_file(&deb)?;
        println!(
            "{label}: {wanted} unpacked into target/vm/kernels/{}",
            series.name
        );
        Self::cached(series, &dir).context("the unpacked kernel is incomplete")
    }

    /// A complete cached kernel in `dir`, if there is one.
    fn cached(series: &'static Series, dir: &Path) -> Option<Self> {
        let package = std::fs::read_to_string(dir.join(PACKAGE_FILE)).ok()?;
        let release = only_entry(&dir.join("lib/modules")).ok()?;
        Some(Self {
            series,
            dir: dir.to_path_buf(),
            release,
            package: package.trim().to_owned(),
        })
    }

    fn image(&self) -> PathBuf {
        self.dir
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }
}

/// The name of the single entry of `dir`.
fn only_entry(dir: &Path) -> anyhow::Result<String> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "{} should hold one kernel release, holds {names:?}",
            dir.display()
        ),
    }
}

/// The binaries every kernel runs, built once on the host.
struct Binaries {
    kernel_tests: PathBuf,
    nettune: PathBuf,
}

impl Binaries {
    fn build() -> anyhow::Result<Self> {
        Ok(Self {
            nettune: crate::run::build(false)?,
            kernel_tests: PathBuf::from(crate::test::built_binary("test", "kernel")?),
        })
    }

    /// The environment of a kernel test run writing its results to `results`.
    fn env(&self, features: &str, results: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
        Ok(vec![
            ("NETTUNE_REQUIRE_FEATURES", features.to_owned()),
            ("NETTUNE_BIN", self.nettune.display().to_string()),
            ("XTASK_BIN", std::env::current_exe()?.display().to_string()),
            (
                "KUBERNETES_VALIDATE",
                setup::kubernetes_validate().display().to_string(),
            ),
            ("NETTUNE_RESULTS_DIR", results.display().to_string()),
        ])
    }
}

/// An empty results directory for `label`.
fn fresh_results_dir(label: &str) -> anyhow::Result<PathBuf> {
    let dir = vm_dir().join("results").join(label);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Quotes `word` for the guest's /bin/sh.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Boots `kernel` once and runs `selection` in it.
fn boot(
    kernel: &KernelImage,
    binaries: &Binaries,
    selection: &Selection,
    timeout: Duration,
) -> anyhow::Result<RunResult> {
    let series = kernel.series;
    let results = fresh_results_dir(series.name)?;
    let env = binaries.env(series.features, &results)?;
    let mut script =
        String::from("mount -t bpf bpf /sys/fs/bpf && modprobe nf_conntrack && exec env");
    for (key, value) in &env {
        write!(script, " {key}={}", sh_quote(value))?;
    }
    write!(
        script,
        " {}",
        sh_quote(&binaries.kernel_tests.display().to_string())
    )?;
    for arg in selection.args() {
        write!(script, " {}", sh_quote(&arg))?;
    }
    let venv_bin = VIRTME_NG.venv_dir().join("bin");
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut vng = Command::new(venv_bin.join("vng"));
    vng.arg("--run")
        .arg(kernel.image())
        .args([
            "--disable-kvm",
            "--force-9p",
            "--memory",
            "2G",
            "--cpus",
            "2",
        ])
        .arg("--rwdir")
        .arg(&results)
        .arg("--cwd")
        .arg(xtask::workspace_root())
        .arg("--exec")
        .arg(&script)
        .env("PATH", path);
    println!(
        "\n==> vm {}: booting {} ({}) under qemu (software emulation): {}",
        series.name,
        kernel.release,
        kernel.package,
        selection.describe()
    );
    let started = Instant::now();
    let streamed =
        process::stream_with_deadline(&mut vng, &format!("[{}] ", series.name), timeout)?;
    let mut run = RunResult::read(series.name, &results)?;
    run.package = Some(kernel.package.clone());
    run.seconds = started.elapsed().as_secs_f64();
    let ended = match streamed.status {
        None => Some(format!("timed out after {} min", timeout.as_secs() / 60)),
        Some(status) if !run.complete => Some(format!("vng exited with {status}")),
        Some(_) => None,
    };
    if let Some(ended) = ended {
        let stage = if run.release.is_none() {
            "the VM did not start the kernel tests"
        } else {
            "the kernel tests stopped before their end"
        };
        run.problem = Some(format!(
            "{stage}: {ended}; its last lines:\n    {}",
            streamed.tail.join("\n    ")
        ));
    }
    println!(
        "==> vm {}: done in {:.0}s",
        series.name,
        started.elapsed().as_secs_f64()
    );
    Ok(run)
}

/// Runs `selection` on the host's kernel, as root, for the matrix's host row.
fn host_run(binaries: &Binaries, selection: &Selection) -> anyhow::Result<RunResult> {
    let results = fresh_results_dir("host")?;
    let features = crate::test::required_features().unwrap_or_default();
    let env = binaries.env(&features, &results)?;
    let names: Vec<&str> = env.iter().map(|(k, _)| *k).collect();
    let program = binaries.kernel_tests.display().to_string();
    let mut cmd = crate::test::as_root(&program, &names)?;
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .args(selection.args());
    println!("\n==> host: the same selection on this machine's kernel, as root");
    let started = Instant::now();
    let (_, _) = process::tee(&mut cmd)?;
    let mut run = RunResult::read("host", &results)?;
    run.seconds = started.elapsed().as_secs_f64();
    if !run.complete {
        run.problem = Some("the kernel tests stopped before their end".to_owned());
    }
    Ok(run)
}

/// One test's result, as the harness wrote it.
pub struct TestOutcome {
    /// The test's name.
    pub name: String,
    /// `passed`, `failed` or `skipped`.
    pub outcome: String,
    /// The failure or the skip's reason.
    pub detail: String,
}

/// Everything one kernel's run left in its results directory.
pub struct RunResult {
    /// `5.10`, `6.1`, `6.12` or `host`.
    pub label: String,
    /// The kernel package booted (VMs only).
    pub package: Option<String>,
    /// The kernel's release, as the guest reported it.
    pub release: Option<String>,
    /// Each test's result.
    pub tests: Vec<TestOutcome>,
    /// Facts the tests recorded (variants, drop reasons, figures).
    pub facts: BTreeMap<String, Value>,
    /// Whether the harness reached its end.
    complete: bool,
    /// Why the run did not complete, if it did not.
    pub problem: Option<String>,
    /// Wall-clock time of the run.
    pub seconds: f64,
}

impl RunResult {
    /// A run with no results yet.
    fn empty(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            package: None,
            release: None,
            tests: Vec::new(),
            facts: BTreeMap::new(),
            complete: false,
            problem: None,
            seconds: 0.0,
        }
    }

    /// A run that could not happen, and why.
    fn not_run(label: &str, problem: String) -> Self {
        Self {
            problem: Some(problem),
            ..Self::empty(label)
        }
    }

    /// Reads `<dir>/results.jsonl` (absent: a run that never started).
    fn read(label: &str, dir: &Path) -> anyhow::Result<Self> {
        let mut run = Self::empty(label);
        let path = dir.join("results.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(run);
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("{}: not JSON: {line}", path.display()))?;
            let text_of = |key: &str| v[key].as_str().unwrap_or_default().to_owned();
            if let Some(kernel) = v["kernel"].as_str() {
                run.release = Some(kernel.to_owned());
            } else if v.get("test").is_some() {
                run.tests.push(TestOutcome {
                    name: text_of("test"),
                    outcome: text_of("outcome"),
                    detail: text_of("detail"),
                });
            } else if let Some(fact) = v["fact"].as_str() {
                run.facts.insert(fact.to_owned(), v["value"].clone());
            } else if v.get("summary").is_some() {
                run.complete = true;
            }
        }
        Ok(run)
    }

    /// (passed, failed, skipped); a run that did not complete counts one failure.
    pub fn counts(&self) -> (u64, u64, u64) {
        let count = |o: &str| self.tests.iter().filter(|t| t.outcome == o).count() as u64;
        (
            count("passed"),
            count("failed") + u64::from(self.problem.is_some()),
            count("skipped"),
        )
    }

    /// `vm 6.1 (6.1.0-56-amd64)` or `host (6.18.…)`.
    fn title(&self) -> String {
        let kind = if self.label == "host" { "" } else { "vm " };
        let release = self.release.as_deref().unwrap_or("did not start");
        format!("{kind}{} ({release})", self.label)
    }
}

fn totals(runs: &[RunResult]) -> (u64, u64, u64) {
    runs.iter()
        .map(RunResult::counts)
        .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
}

/// Prints one block per kernel: its counts, then one line per test.
pub fn print_report(runs: &[RunResult]) {
    println!("\n==> kernel matrix");
    for run in runs {
        let (passed, failed, skipped) = run.counts();
        let package = run
            .package
            .as_deref()
            .map(|p| format!(", {p}"))
            .unwrap_or_default();
        println!(
            "{}{package}: {passed} passed, {failed} failed, {skipped} skipped in {:.0}s",
            run.title(),
            run.seconds
        );
        for test in &run.tests {
            let detail = if test.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", test.detail.lines().next().unwrap_or_default())
            };
            let outcome = match test.outcome.as_str() {
                "passed" => "ok",
                "failed" => "FAILED",
                other => other,
            };
            println!("  {outcome:<8} {}{detail}", test.name);
        }
        if let Some(problem) = &run.problem {
            println!("  FAILED   {problem}");
        }
    }
}

/// A test's detail as a footnote: its first line, at most 300 characters (a
/// failure may carry a whole screen of output; the results file keeps it all).
fn headline(detail: &str) -> String {
    let line = detail.lines().next().unwrap_or_default();
    match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// Footnotes for long texts (skip reasons, kernel errors) in the doc's tables.
#[derive(Default)]
struct Notes(Vec<String>);

impl Notes {
    /// A reference `[n]` to `text`, numbered in order of first use.
    fn cite(&mut self, text: String) -> String {
        let text = text.replace('\n', " ");
        let n = match self.0.iter().position(|t| *t == text) {
            Some(i) => i + 1,
            None => {
                self.0.push(text);
                self.0.len()
            }
        };
        format!("[{n}]")
    }

    fn render(&self, out: &mut String) {
        for (i, text) in self.0.iter().enumerate() {
            let _ = writeln!(out, "{}. {}", i + 1, text.replace('|', "\\|"));
        }
    }
}

/// One markdown table: a header row, then rows.
fn table(out: &mut String, header: &[String], rows: &[Vec<String>]) {
    let line = |cells: &[String]| format!("| {} |", cells.join(" | "));
    let _ = writeln!(out, "{}", line(header));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for row in rows {
        let _ = writeln!(out, "{}", line(row));
    }
    out.push('\n');
}

/// A fact as short text for a table cell.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "–".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
        other => other.to_string(),
    }
}

/// docs/kernel-support.md from the host's and every VM's results.
pub fn kernel_support_doc(runs: &[RunResult]) -> String {
    let mut out = String::new();
    let mut notes = Notes::default();
    let heads: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    let header = |first: &str| {
        std::iter::once(first.to_owned())
            .chain(heads.iter().cloned())
            .collect::<Vec<_>>()
    };
    out.push_str(
        "# Kernel support\n\n\
         Generated by `cargo xtask vm-test --kernel all`, which rewrites this file from\n\
         the kernel tests' own results: do not edit it by hand. The host row is this\n\
         machine's kernel; the others are Debian's kernel packages booted under qemu\n\
         (software emulation) with virtme-ng, each running the same kernel tests with\n\
         `NETTUNE_REQUIRE_FEATURES` set to what that kernel has. See\n\
         [testing.md](testing.md).\n\n## Kernels\n\n",
    );
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let (passed, failed, skipped) = r.counts();
            let series = SERIES.iter().find(|s| s.name == r.label);
            vec![
                r.label.clone(),
                r.release
                    .clone()
                    .unwrap_or_else(|| "did not start".to_owned()),
                r.package
                    .clone()
                    .unwrap_or_else(|| "the machine's own".to_owned()),
                series.map_or("–", |s| s.debian).to_owned(),
                format!("{passed} passed, {failed} failed, {skipped} skipped"),
            ]
        })
        .collect();
    let kernels_header = ["", "release", "package", "from", "kernel tests"].map(str::to_owned);
    table(&mut out, &kernels_header, &rows);

    out.push_str(
        "## Variant attached per signal\n\nWhat `nettune probes` attaches by default.\n\n",
    );
    let signals: Vec<String> = runs
        .iter()
        .filter_map(|r| r.facts.get("attached")?.as_object())
        .flat_map(|o| o.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows: Vec<Vec<String>> = signals
        .iter()
        .map(|signal| {
            std::iter::once(format!("`{signal}`"))
                .chain(runs.iter().map(|r| {
                    r.facts
                        .get("attached")
                        .map_or_else(|| "not run".to_owned(), |a| cell(&a[signal.as_str()]))
                }))
                .collect()
        })
        .collect();
    table(&mut out, &header("signal"), &rows);

    out.push_str(
        "## Every variant, forced in turn\n\n\
         Each signal's chain walked to its end with `--disable-variant` (test\n\
         `probes::every_variant_loads_or_is_skipped_with_the_kernels_reason`): ✓ loads\n\
         (the verifier accepts it) and attaches; otherwise the kernel's reason.\n\n",
    );
    let mut rows = Vec::new();
    for signal in &signals {
        // [[variant, null or the kernel's reason], …] in chain order, per kernel.
        let chain_of = |run: &RunResult| -> Vec<(String, Value)> {
            run.facts
                .get("variants")
                .and_then(|v| v.get(signal))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|pair| Some((pair[0].as_str()?.to_owned(), pair[1].clone())))
                .collect()
        };
        let mut variants: Vec<String> = Vec::new();
        for (variant, _) in runs.iter().flat_map(chain_of) {
            if !variants.contains(&variant) {
                variants.push(variant);
            }
        }
        for variant in variants {
            let mut row = vec![format!("`{signal}` {variant}")];
            for run in runs {
                let chain = chain_of(run);
                let verdict = chain.iter().find(|(v, _)| *v == variant).map(|(_, r)| r);
                row.push(match verdict {
                    None if chain.is_empty() => "not run".to_owned(),
                    None => "not reached".to_owned(),
                    Some(Value::Null) => "✓".to_owned(),
                    Some(reason) => format!("✗ {}", notes.cite(cell(reason))),
                });
            }
            rows.push(row);
        }
    }
    table(&mut out, &header("signal, variant"), &rows);

    out.push_str(
        "## Drop reasons\n\n\
         From each kernel's BTF (`enum skb_drop_reason`, read with bpftool) and the\n\
         drops the tests caused; `–` where the kernel has no such reason.\n\n",
    );
    let fact_rows: [(&str, &str, &str); 13] = [
        ("`kfree_skb` has a reason", "drop_reasons", "reason_field"),
        ("names in the enum", "drop_reasons", "enum"),
        (
            "`SKB_CONSUMED` (not a drop)",
            "drop_reasons",
            "SKB_CONSUMED",
        ),
        ("`NOT_SPECIFIED`", "drop_reasons", "NOT_SPECIFIED"),
        ("`NO_SOCKET`", "drop_reasons", "NO_SOCKET"),
        ("`TC_INGRESS`", "drop_reasons", "TC_INGRESS"),
        ("`QDISC_DROP`", "drop_reasons", "QDISC_DROP"),
        (
            "packet-socket overruns counted under",
            "packet_socket_drops",
            "reason",
        ),
        (
            "… their count (= the socket's frees)",
            "packet_socket_drops",
            "counted",
        ),
        ("netem's drops counted under", "netem_drops", "reason"),
        ("… their count (= netem's own)", "netem_drops", "counted"),
        (
            "pod tc drops counted (clsact)",
            "pod_traffic_clsact",
            "tc_drops_counted",
        ),
        (
            "… of those the tc program dropped",
            "pod_traffic_clsact",
            "tc_program_dropped",
        ),
    ];
    let rows: Vec<Vec<String>> = fact_rows
        .iter()
        .map(|(label, fact, key)| {
            std::iter::once((*label).to_owned())
                .chain(runs.iter().map(|r| {
                    r.facts
                        .get(*fact)
                        .map_or_else(|| "not run".to_owned(), |f| cell(&f[*key]))
                }))
                .collect()
        })
        .collect();
    table(&mut out, &header(""), &rows);
    out.push_str(
        "Where `kfree_skb` has no reason (before 5.17), every drop is counted under\n\
         reason 0, shown as `REASON_0`; reason names are then unavailable, and so are\n\
         the figures that need one: tc drops on a pod's interface (reported as 0) and\n\
         `NETFILTER_DROP` urgent events.\n\n",
    );

    out.push_str(
        "## Listen overflows per socket\n\n\
         Two listeners that never accept, in a namespace whose somaxconn is 3, under\n\
         connect storms: per listener `port listen(backlog)` → the limit nettune saw,\n\
         the queue length at the overflow, and the overflows counted; then their sum\n\
         against the namespace's own `ListenOverflows` delta.\n\n",
    );
    let mut rows = Vec::new();
    for variant in ["fentry", "kprobe"] {
        let key = format!("listen_overflow_{variant}");
        let mut row = vec![variant.to_owned()];
        for run in runs {
            row.push(run.facts.get(&key).map_or_else(
                || "not run".to_owned(),
                |f| {
                    let listeners = f["listeners"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|l| {
                            format!(
                                "{} listen({}) → limit {}, queue {}, {}",
                                l[0], l[1], l[2], l[3], l[4]
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    format!("{listeners}; ListenOverflows {}", f["listen_overflows"])
                },
            ));
        }
        rows.push(row);
    }
    table(&mut out, &header("variant"), &rows);

    out.push_str("## Kernel tests\n\n");
    let mut names: Vec<&str> = Vec::new();
    for run in runs {
        for test in &run.tests {
            if !names.contains(&test.name.as_str()) {
                names.push(&test.name);
            }
        }
    }
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|name| {
            std::iter::once(format!("`{name}`"))
                .chain(
                    runs.iter()
                        .map(|r| match r.tests.iter().find(|t| t.name == *name) {
                            None => "not run".to_owned(),
                            Some(t) if t.outcome == "passed" => "ok".to_owned(),
                            Some(t) => format!(
                                "{} {}",
                                t.outcome,
                                notes.cite(format!("{}: {}", r.label, headline(&t.detail)))
                            ),
                        }),
                )
                .collect()
        })
        .collect();
    table(&mut out, &header("test"), &rows);
    for run in runs {
        if let Some(problem) = &run.problem {
            let _ = writeln!(out, "- {}: {}", run.label, problem.replace('\n', " "));
        }
    }
    out.push_str("Not run in the VMs (the host row runs the same selection):\n\n");
    for (filter, why) in NOT_IN_VMS {
        let _ = writeln!(out, "- `{filter}*`: {why}");
    }
    out.push_str("\n## Notes\n\n");
    notes.render(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_footnote_keeps_only_the_first_line_of_a_long_detail() {
        assert_eq!(headline("needs x"), "needs x");
        assert_eq!(headline("failed:\nscreen\nscreen"), "failed:");
        let long = "é".repeat(400);
        assert_eq!(headline(&long).chars().count(), 301);
    }

    #[test]
    fn archives_come_from_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm \
                      bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: \
                      http://deb.debian.org/debian-security/\nSuites: bookworm-security\n";
        let archives = Archives::from_entries(&parse_deb822(deb822)).unwrap();
        assert_eq!(
            archives,
            Archives {
                main: "http://deb.debian.org/debian".into(),
                security: "http://deb.debian.org/debian-security".into(),
            }
        );
        let one_line = "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm \
                        main\ndeb http://s/debian-security bookworm-security main\n";
        let archives = Archives::from_entries(&parse_one_line(one_line)).unwrap();
        assert_eq!(archives.main, "http://m/debian");
        assert_eq!(archives.security, "http://s/debian-security");
        let err = Archives::from_entries(&parse_one_line("deb http://m/debian bookworm main"))
            .unwrap_err();
        assert!(err.to_string().contains("security archive"), "{err}");
    }

    #[test]
    fn guest_words_are_quoted_for_sh() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn selection_skips_only_without_filters() {
        let all = Selection::for_vms(&[]);
        assert!(all.args().contains(&"--skip".to_owned()));
        assert!(all.args().contains(&"deploy::".to_owned()));
        let some = Selection::for_vms(&["listen::".to_owned()]);
        assert_eq!(some.args(), ["listen::"]);
    }

    #[test]
    fn results_are_read_with_facts_and_a_missing_end_is_a_failure() {
        let dir = std::env::temp_dir().join(format!("xtask-vm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("results.jsonl"),
            "{\"kernel\":\"6.1.0-56-amd64\"}\n\
             {\"test\":\"a::b\",\"outcome\":\"passed\",\"detail\":\"\",\"seconds\":1.0}\n\
             {\"fact\":\"attached\",\"value\":{\"drops\":\"tp_btf\"}}\n\
             {\"test\":\"a::c\",\"outcome\":\"skipped\",\"detail\":\"needs x\",\"seconds\":0.0}\n",
        )
        .unwrap();
        let mut run = RunResult::read("6.1", &dir).unwrap();
        assert_eq!(run.release.as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(run.counts(), (1, 0, 1));
        assert!(!run.complete);
        run.problem = Some("stopped".into());
        assert_eq!(run.counts(), (1, 1, 1));
        let doc = kernel_support_doc(&[run]);
        assert!(doc.contains("| `drops` | tp_btf |"), "{doc}");
        assert!(doc.contains("needs x"), "{doc}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
