//! The string parsers: LOCKSPACE / RESOURCE / RINDEX / rentry / dump spec,
//! and `cli::args::parse` with the input split on NUL bytes into the action
//! and its arguments. Besides not panicking, what parses must be consistent
//! and, for strings without backslashes, print back to the same value.
#![no_main]

use hactl::cli::args;
use hactl::direct::dump::parse_dump_spec;
use hactl::lease_str::{
    SANLK_MAX_DISKS, SANLK_PATH_LEN, escape_path, parse_c_u64, parse_lockspace, parse_offset,
    parse_rentry, parse_resource, parse_rindex, unescape_path,
};
use hactl::ondisk::Name;
use libfuzzer_sys::fuzz_target;

/// A name that sanlock's strings can carry without escaping.
fn plain_name(n: &Name) -> bool {
    !n.bytes().iter().any(|&c| c == b':' || c == b'\\')
}

fn plain_path(p: &str) -> bool {
    !p.contains('\\')
}

fn check_str(s: &str) {
    if let Ok(ls) = parse_lockspace(s) {
        assert!(ls.disk.path.len() < SANLK_PATH_LEN);
        if plain_name(&ls.name) && plain_path(&ls.disk.path) {
            let again = format!(
                "{}:{}:{}:{}",
                ls.name,
                ls.host_id,
                escape_path(&ls.disk.path),
                ls.disk.offset
            );
            assert_eq!(
                parse_lockspace(&again).as_ref(),
                Ok(&ls),
                "lockspace {s:?} -> {again:?}"
            );
        }
    }

    if let Ok(r) = parse_resource(s) {
        assert!(r.disks.len() <= SANLK_MAX_DISKS);
        assert!(
            r.disks
                .iter()
                .all(|d| !d.path.is_empty() && d.path.len() < SANLK_PATH_LEN)
        );
        assert!(!(r.shared && r.lver.is_some()));
        let printable = !r.disks.is_empty()
            && plain_name(&r.lockspace)
            && plain_name(&r.name)
            && r.disks.iter().all(|d| plain_path(&d.path));
        if printable {
            let again = r.to_sanlock_string();
            let back = parse_resource(&again)
                .unwrap_or_else(|e| panic!("resource {s:?} printed as {again:?}: {e}"));
            assert_eq!(back.lockspace, r.lockspace, "{s:?} -> {again:?}");
            assert_eq!(back.name, r.name, "{s:?} -> {again:?}");
            assert_eq!(back.disks, r.disks, "{s:?} -> {again:?}");
            assert_eq!(back.shared, r.shared, "{s:?} -> {again:?}");
            if !r.shared {
                assert_eq!(back.lver, Some(r.lver.unwrap_or(0)), "{s:?} -> {again:?}");
            }
        }
    }

    if let Ok(rx) = parse_rindex(s) {
        assert!(rx.disk.path.len() < SANLK_PATH_LEN);
        if plain_name(&rx.lockspace) && plain_path(&rx.disk.path) {
            let again = format!(
                "{}:{}:{}",
                rx.lockspace,
                escape_path(&rx.disk.path),
                rx.disk.offset
            );
            assert_eq!(
                parse_rindex(&again).as_ref(),
                Ok(&rx),
                "rindex {s:?} -> {again:?}"
            );
        }
    }

    if let Ok((name, off)) = parse_rentry(s) {
        let again = format!("{name}:{off}");
        assert_eq!(
            parse_rentry(&again),
            Ok((name, off)),
            "rentry {s:?} -> {again:?}"
        );
    }

    if let Ok((path, off, size)) = parse_dump_spec(s)
        && plain_path(&path)
    {
        let again = format!("{}:{off}:{size}", escape_path(&path));
        let back = parse_dump_spec(&again)
            .unwrap_or_else(|e| panic!("dump spec {s:?} printed as {again:?}: {e}"));
        assert_eq!(back, (path, off, size), "dump spec {s:?} -> {again:?}");
    }

    let _ = (parse_offset(s), parse_c_u64(s), unescape_path(s));
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_str(&text);

    let mut parts = text.split('\0').map(str::to_string);
    let action = parts.next().unwrap_or_default();
    let argv: Vec<String> = parts.collect();
    for a in &argv {
        check_str(a);
    }
    if let Ok(com) = args::parse(&action, &argv) {
        assert!(com.resources.len() <= 8);
        if let Some(a) = com.align_size {
            assert!(hactl::geometry::Geometry::new(com.sector_size.unwrap_or(0), a).is_ok());
        }
        if action == "dump" || action == "next_free" {
            assert!(com.dump_path.is_some());
        }
        if !com.command.is_empty() {
            assert!(argv.iter().any(|a| a == "-c"));
        }
    }
});
