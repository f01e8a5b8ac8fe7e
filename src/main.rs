//! The `denorun` binary: the runtime library (`lib.rs`) with the startup snapshot that
//! `build.rs` made with it.

static SNAPSHOT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/DENORUN_SNAPSHOT.bin"));

mod residual {
    include!(concat!(env!("OUT_DIR"), "/residual.rs"));
}

fn main() {
    denorun_runtime::main(denorun_runtime::Snapshot {
        bytes: SNAPSHOT,
        lazy_js: residual::RESIDUAL_LAZY_JS,
        lazy_esm: residual::RESIDUAL_LAZY_ESM,
    })
}
