//! Link settings of the `serval` executable.

fn main() {
    // Relative relocations packed (DT_RELR, glibc 2.36+): a position-independent
    // executable keeps its relocations in a few KiB instead of a table of 24-byte
    // entries that the loader reads in full at every start (about 1 MiB here, resident
    // for the life of the process). Only `serval` itself: it runs in its own image with
    // the glibc it was built against, while `serval-cni` runs with the host's.
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.ends_with("-linux-gnu") {
        println!("cargo:rustc-link-arg-bin=serval=-Wl,-z,pack-relative-relocs");
    }
}
