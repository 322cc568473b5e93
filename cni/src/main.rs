//! The CNI plugin binary: environment and stdin in, JSON on stdout, exit code out.

use std::io::{Read, Write};

fn main() {
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = cni::spec::CniError::new(cni::spec::ErrorCode::Io, "cannot read stdin")
            .details(e.to_string());
        println!("{}", err.to_json(cni::spec::Version::LATEST));
        std::process::exit(1);
    }
    let out = cni::run(|k| std::env::var(k).ok(), &stdin);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.stdout.as_bytes());
    let _ = stdout.flush();
    std::process::exit(out.exit_code);
}
