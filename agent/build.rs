//! Builds the simulated NVML library (`nvml-sim/`) as a shared object in `OUT_DIR`.
//!
//! The agent embeds it (`include_bytes!`) and writes it out when `--simulate-gpus` is
//! given, so the simulation is loaded by nvml-wrapper exactly like the real
//! `libnvidia-ml.so.1`. The `cc` crate only supplies the configured C compiler: it builds
//! static archives, and this needs a `-shared` object.

use std::env;
use std::path::PathBuf;

const SOURCES: &[&str] = &[
    "nvml-sim/sim_state.c",
    "nvml-sim/nvml_api.c",
    "nvml-sim/nvml_health.c",
    "nvml-sim/faults.c",
];
const HEADERS: &[&str] = &["nvml-sim/nvml_sim.h", "nvml-sim/sim_internal.h"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for file in SOURCES.iter().chain(HEADERS) {
        println!("cargo:rerun-if-changed={file}");
    }
    let Some(out_dir) = env::var_os("OUT_DIR") else {
        panic!("OUT_DIR is not set: build.rs must run under cargo");
    };
    let Some(manifest_dir) = env::var_os("CARGO_MANIFEST_DIR") else {
        panic!("CARGO_MANIFEST_DIR is not set: build.rs must run under cargo");
    };
    let manifest_dir = PathBuf::from(manifest_dir);
    let output = PathBuf::from(out_dir).join("libnvidia-ml-sim.so");

    let compiler = cc::Build::new().get_compiler();
    let mut command = compiler.to_command();
    command
        .args([
            "-shared",
            "-fPIC",
            "-O2",
            "-fvisibility=hidden",
            "-Wall",
            "-Wextra",
        ])
        // Calls between the library's own functions stay inside this copy, whatever
        // else the process has loaded.
        .arg("-Wl,-Bsymbolic")
        .arg("-o")
        .arg(&output);
    for source in SOURCES {
        command.arg(manifest_dir.join(source));
    }
    command.args(["-lm", "-lpthread", "-ldl"]);
    let status = match command.status() {
        Ok(status) => status,
        Err(e) => panic!("running the C compiler {:?}: {e}", compiler.path()),
    };
    if !status.success() {
        panic!("building the simulated NVML library failed ({status}): {command:?}");
    }
}
