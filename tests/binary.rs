//! The `serval` executable as linked: its relative relocations are packed (DT_RELR), so
//! the loader does not read (and keep resident) a table of 24-byte entries at every
//! start. Read from the ELF section headers; no tool needed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn read_at(f: &mut File, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut buf).unwrap();
    buf
}

/// Section name to size, of a little-endian ELF64 file.
fn sections(path: &str) -> BTreeMap<String, u64> {
    let mut f = File::open(path).unwrap();
    let ehdr = read_at(&mut f, 0, 64);
    assert_eq!(&ehdr[..4], b"\x7fELF", "{path} is not an ELF file");
    assert_eq!(
        (ehdr[4], ehdr[5]),
        (2, 1),
        "{path} is not little-endian ELF64"
    );
    let shoff = u64_at(&ehdr, 0x28);
    let shentsize = u16_at(&ehdr, 0x3a) as usize;
    let shnum = u16_at(&ehdr, 0x3c) as usize;
    let shstrndx = u16_at(&ehdr, 0x3e) as usize;
    let table = read_at(&mut f, shoff, shentsize * shnum);
    let header = |i: usize| &table[i * shentsize..(i + 1) * shentsize];
    let names = header(shstrndx);
    let names = read_at(&mut f, u64_at(names, 24), u64_at(names, 32) as usize);
    (0..shnum)
        .map(|i| {
            let h = header(i);
            let start = u32_at(h, 0) as usize;
            let end = start + names[start..].iter().position(|&c| c == 0).unwrap();
            (
                String::from_utf8_lossy(&names[start..end]).into_owned(),
                u64_at(h, 32),
            )
        })
        .collect()
}

#[test]
fn serval_packs_its_relative_relocations() {
    let s = sections(env!("CARGO_BIN_EXE_serval"));
    assert!(
        s.get(".relr.dyn").is_some_and(|&n| n > 0),
        "no .relr.dyn: the linker did not pack relative relocations ({s:?})"
    );
    let rela = s.get(".rela.dyn").copied().unwrap_or(0);
    assert!(
        rela < 64 * 1024,
        ".rela.dyn is {rela} bytes: relative relocations are not packed"
    );
}
