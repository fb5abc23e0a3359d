//! Runner "libvirt": an HA VM is a libvirt domain whose definition carries
//! its VM lease as a `<lease>` element (lockspace, key = lease id, target =
//! the xleases volume and the lease's offset). libvirt's sanlock plugin
//! (`lock_manager = "sanlock"` in qemu.conf) registers the domain's qemu
//! with the local lease daemon and acquires the lease before the guest
//! runs, so qemu holds it, the daemon kills it (through libvirt's killpath
//! helper, `<on_lockfailure>`) when the host loses its lockspace, and
//! libvirt refuses to run the domain while another host holds the lease.
//!
//! The agent talks to libvirt through `virsh` (libvirt-clients), not by
//! linking libvirt (the `virt` crate): hactl is also the lease daemon and
//! its CLI on hosts without libvirt, and a libvirt library in every hactl
//! would tie those to libvirt's packages; an HA start or stop is a rare,
//! slow operation where a process per call costs nothing, and libvirt's
//! error text reaches the agent unchanged on virsh's stderr.
//!
//! Before each start the agent makes sure of the lease element
//! ([`prepare`]): from a domain XML file (`domain_xml`) it writes the
//! element and defines the domain; for a domain defined by the admin
//! (`domain`) it adds a missing element, and refuses to start a domain
//! whose element names another lease, so a domain can never start without
//! its lease.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::xleases::LeaseInfo;

/// The connection every libvirt call uses unless the config says.
pub const DEFAULT_URI: &str = "qemu:///system";

/// A domain as the config names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    /// The agent defines the domain from this file (with the lease
    /// element written) before each start.
    pub xml: Option<PathBuf>,
    pub uri: String,
}

/// `virsh -q -c URI ARGS`.
pub fn virsh(uri: &str, args: &[&str]) -> Result<Output, String> {
    Command::new("virsh")
        .args(["-q", "-c", uri])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run virsh (install libvirt-clients): {e}"))
}

/// virsh's last `error:` line (libvirt's own words), or all of stderr.
pub fn error_text(stderr: &[u8]) -> String {
    let t = String::from_utf8_lossy(stderr);
    t.lines()
        .rfind(|l| l.starts_with("error:"))
        .map_or_else(|| t.trim().to_string(), |l| l.trim().to_string())
}

fn ok(uri: &str, args: &[&str]) -> Result<String, String> {
    let o = virsh(uri, args)?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!(
            "virsh {}: {}",
            args.join(" "),
            error_text(&o.stderr)
        ))
    }
}

/// The `<lease>` element of `lease`.
pub fn lease_element(lease: &LeaseInfo, indent: &str) -> String {
    format!(
        "{indent}<lease>\n{indent}  <lockspace>{}</lockspace>\n{indent}  <key>{}</key>\n{indent}  <target path='{}' offset='{}'/>\n{indent}</lease>\n",
        xml_escape(&lease.lockspace),
        xml_escape(&lease.resource),
        xml_escape(&lease.path.clone()),
        lease.offset
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// One `<lease>` of a domain definition.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LeaseEl {
    lockspace: String,
    key: String,
    path: String,
    offset: u64,
    /// Byte range of the element in the XML text.
    range: std::ops::Range<usize>,
}

/// What a definition says about a VM's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseCheck {
    /// Exactly this lease.
    Matches,
    /// No `<lease>` of this lockspace and key.
    Missing,
    /// An element for this VM names another lease: the message says how.
    Differs(String),
}

fn child_text<'a>(n: roxmltree::Node<'a, 'a>, tag: &str) -> Option<&'a str> {
    n.children()
        .find(|c| c.has_tag_name(tag))
        .and_then(|c| c.text())
        .map(str::trim)
}

fn parse(xml: &str) -> Result<roxmltree::Document<'_>, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("domain XML: {e}"))?;
    if !doc.root_element().has_tag_name("domain") {
        return Err("domain XML: the root element is not <domain>".into());
    }
    Ok(doc)
}

fn leases(doc: &roxmltree::Document) -> Result<Vec<LeaseEl>, String> {
    let Some(devices) = doc
        .root_element()
        .children()
        .find(|c| c.has_tag_name("devices"))
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for l in devices.children().filter(|c| c.has_tag_name("lease")) {
        let target = l.children().find(|c| c.has_tag_name("target"));
        let offset = target.and_then(|t| t.attribute("offset")).unwrap_or("0");
        out.push(LeaseEl {
            lockspace: child_text(l, "lockspace").unwrap_or("").to_string(),
            key: child_text(l, "key").unwrap_or("").to_string(),
            path: target
                .and_then(|t| t.attribute("path"))
                .unwrap_or("")
                .to_string(),
            offset: offset
                .parse()
                .map_err(|_| format!("domain XML: <lease> offset {offset:?} is not a number"))?,
            range: l.range(),
        });
    }
    Ok(out)
}

/// The domain's `<name>`.
pub fn domain_name(xml: &str) -> Result<String, String> {
    let doc = parse(xml)?;
    child_text(doc.root_element(), "name")
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .ok_or_else(|| "domain XML has no <name>".into())
}

/// Whether the definition carries `lease`. An element is this VM's when it
/// has the lease's lockspace and key, or its target.
pub fn check_lease(xml: &str, lease: &LeaseInfo) -> Result<LeaseCheck, String> {
    let doc = parse(xml)?;
    let want_path = lease.path.clone();
    let ours: Vec<LeaseEl> = leases(&doc)?
        .into_iter()
        .filter(|l| {
            (l.lockspace == lease.lockspace && l.key == lease.resource)
                || (l.path == want_path && l.offset == lease.offset)
        })
        .collect();
    let Some(first) = ours.first() else {
        return Ok(LeaseCheck::Missing);
    };
    if ours.len() > 1 {
        return Ok(LeaseCheck::Differs(format!(
            "{} <lease> elements name lease {}:{}",
            ours.len(),
            lease.lockspace,
            lease.resource
        )));
    }
    let same = first.lockspace == lease.lockspace
        && first.key == lease.resource
        && first.path == want_path
        && first.offset == lease.offset;
    Ok(if same {
        LeaseCheck::Matches
    } else {
        LeaseCheck::Differs(format!(
            "its <lease> is {}:{} at {}:{}, the xleases volume says {}:{} at {}:{}",
            first.lockspace,
            first.key,
            first.path,
            first.offset,
            lease.lockspace,
            lease.resource,
            want_path,
            lease.offset
        ))
    })
}

/// `xml` with this VM's `<lease>` elements replaced by `lease` (inserted
/// before `</devices>`; a `<devices>` is made when there is none), and
/// `uuid` as the domain's `<uuid>` when it has none.
pub fn with_lease(xml: &str, lease: &LeaseInfo, uuid: Option<&str>) -> Result<String, String> {
    let doc = parse(xml)?;
    let want_path = lease.path.clone();
    let mut cut: Vec<std::ops::Range<usize>> = leases(&doc)?
        .into_iter()
        .filter(|l| {
            (l.lockspace == lease.lockspace && l.key == lease.resource)
                || (l.path == want_path && l.offset == lease.offset)
        })
        .map(|l| l.range)
        .collect();
    let root = doc.root_element();
    let devices = root.children().find(|c| c.has_tag_name("devices"));
    let has_uuid = root.children().any(|c| c.has_tag_name("uuid"));
    // Insert points (byte offset, text), applied back to front with the cuts.
    let mut edits: Vec<(std::ops::Range<usize>, String)> =
        cut.drain(..).map(|r| (r, String::new())).collect();
    match devices {
        Some(d) => {
            let r = d.range();
            let end_tag = xml[r.clone()]
                .rfind("</devices>")
                .map(|i| r.start + i)
                .ok_or(
                    "domain XML: <devices/> is empty-element syntax; write <devices></devices>",
                )?;
            // On its own line, indented one step more than </devices>.
            let line_start = xml[..end_tag].rfind('\n').map_or(0, |i| i + 1);
            let before = &xml[line_start..end_tag];
            if before.trim().is_empty() {
                edits.push((
                    line_start..line_start,
                    lease_element(lease, &format!("{before}  ")),
                ));
            } else {
                edits.push((
                    end_tag..end_tag,
                    format!("\n{}", lease_element(lease, "    ")),
                ));
            }
        }
        None => {
            let r = root.range();
            let end_tag = xml[r.clone()]
                .rfind("</domain>")
                .map(|i| r.start + i)
                .ok_or("domain XML: no </domain>")?;
            edits.push((
                end_tag..end_tag,
                format!(
                    "  <devices>\n{}  </devices>\n",
                    lease_element(lease, "    ")
                ),
            ));
        }
    }
    if let (false, Some(u)) = (has_uuid, uuid) {
        let name_end = root
            .children()
            .find(|c| c.has_tag_name("name"))
            .map(|n| n.range().end)
            .ok_or("domain XML has no <name>")?;
        edits.push((
            name_end..name_end,
            format!("\n  <uuid>{}</uuid>", xml_escape(u)),
        ));
    }
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut out = xml.to_string();
    for (r, text) in edits {
        // Drop the whole line of a removed element when it stands alone.
        let mut r = r;
        if text.is_empty() {
            let line_start = out[..r.start].rfind('\n').map_or(0, |i| i + 1);
            if out[line_start..r.start].trim().is_empty() && out[r.end..].starts_with('\n') {
                r = line_start..r.end + 1;
            }
        }
        out.replace_range(r, &text);
    }
    Ok(out)
}

/// Makes sure the domain is defined with `lease` (see the module doc).
/// `run_dir` receives the XML the agent defines.
pub fn prepare(dom: &Domain, lease: &LeaseInfo, run_dir: &Path) -> Result<(), String> {
    match &dom.xml {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read domain XML {}: {e}", file.display()))?;
            let name = domain_name(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            if name != dom.name {
                return Err(format!(
                    "{} defines domain {name:?}, the config says {:?}",
                    file.display(),
                    dom.name
                ));
            }
            // Redefining under another UUID is refused: keep the one
            // libvirt has.
            let uuid = ok(&dom.uri, &["domuuid", &dom.name])
                .ok()
                .map(|u| u.trim().to_string());
            let xml = with_lease(&text, lease, uuid.as_deref())
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let out = run_dir.join(format!("domain-{}.xml", dom.name));
            std::fs::write(&out, xml).map_err(|e| format!("{}: {e}", out.display()))?;
            ok(&dom.uri, &["define", &out.display().to_string()])?;
            Ok(())
        }
        None => {
            let xml = ok(&dom.uri, &["dumpxml", "--inactive", &dom.name])?;
            match check_lease(&xml, lease)? {
                LeaseCheck::Matches => Ok(()),
                LeaseCheck::Differs(why) => Err(format!(
                    "domain {}: {why}; not starting it (fix the domain's <lease> or the config)",
                    dom.name
                )),
                LeaseCheck::Missing => {
                    let xml = with_lease(&xml, lease, None)?;
                    let out = run_dir.join(format!("domain-{}.xml", dom.name));
                    std::fs::write(&out, xml).map_err(|e| format!("{}: {e}", out.display()))?;
                    ok(&dom.uri, &["define", &out.display().to_string()])?;
                    Ok(())
                }
            }
        }
    }
}

/// sanlock_strerror()'s words (in libvirt's "Failed to acquire lock: ..."),
/// and the errno texts, for the results that mean another host has the
/// lease: a lost race, not this host's failure.
const HELD_ELSEWHERE: &[(&str, i32)] = &[
    (
        "Lease is held by another host",
        crate::rv::SANLK_ACQUIRE_IDLIVE,
    ),
    (
        "Lease was acquired by another host in other ballot",
        crate::rv::SANLK_ACQUIRE_OWNED,
    ),
    (
        "Lease was acquired by another host in local commit",
        crate::rv::SANLK_ACQUIRE_OTHER,
    ),
    (
        "Lease is owned by another host",
        crate::rv::SANLK_ACQUIRE_OWNED_RETRY,
    ),
    (
        "Lease was acquired by another host in new ballot",
        crate::rv::SANLK_DBLOCK_LVER,
    ),
    (
        "Lease was acquired by another host in current ballot",
        crate::rv::SANLK_DBLOCK_MBAL,
    ),
    ("Resource temporarily unavailable", -libc::EAGAIN),
    ("Device or resource busy", -libc::EBUSY),
];

/// How a refused `virsh start` ended: `Ok(rv)` when the lease is held by
/// another host (libvirt's text names sanlock's reason), `Err(reason)`
/// for any other failure. qemu's own image locking refusing a disk that
/// another qemu has open also means someone else runs the VM.
pub fn judge_start_error(error: &str) -> Result<i32, String> {
    if let Some(i) = error.find("Failed to acquire lock: ") {
        let why = error[i + "Failed to acquire lock: ".len()..].trim();
        if let Some((_, rv)) = HELD_ELSEWHERE.iter().find(|(t, _)| why.starts_with(t)) {
            return Ok(*rv);
        }
    }
    if error.contains("Failed to get \"write\" lock") {
        return Ok(-libc::EAGAIN);
    }
    Err(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> LeaseInfo {
        LeaseInfo {
            lockspace: "ha".into(),
            resource: "web1".into(),
            path: "/srv/ha/xleases".into(),
            offset: 3 << 20,
        }
    }

    const DOM: &str = "<domain type='kvm'>
  <name>web1</name>
  <memory unit='MiB'>64</memory>
  <devices>
    <disk type='file' device='disk'>
      <source file='/srv/web1.img'/>
    </disk>
  </devices>
</domain>
";

    #[test]
    fn a_missing_lease_is_added_before_the_end_of_devices() {
        let l = lease();
        assert_eq!(check_lease(DOM, &l).unwrap(), LeaseCheck::Missing);
        let x = with_lease(DOM, &l, Some("0a5d2e6c-8a0b-4f43-9f63-3a1c5d3e7f10")).unwrap();
        assert_eq!(check_lease(&x, &l).unwrap(), LeaseCheck::Matches, "{x}");
        assert!(
            x.contains("<uuid>0a5d2e6c-8a0b-4f43-9f63-3a1c5d3e7f10</uuid>"),
            "{x}"
        );
        assert!(
            x.contains("    <lease>\n      <lockspace>ha</lockspace>"),
            "{x}"
        );
        let lease_at = x.find("<lease>").unwrap();
        assert!(lease_at > x.find("<disk").unwrap() && lease_at < x.find("</devices>").unwrap());
        // Idempotent.
        assert_eq!(with_lease(&x, &l, Some("other")).unwrap(), x);
    }

    #[test]
    fn a_lease_naming_another_target_is_reported_and_rewritten() {
        let l = lease();
        let wrong = DOM.replace(
            "  </devices>",
            "    <lease><lockspace>ha</lockspace><key>web1</key><target path='/old/xleases' offset='4194304'/></lease>\n  </devices>",
        );
        let LeaseCheck::Differs(why) = check_lease(&wrong, &l).unwrap() else {
            panic!()
        };
        assert!(why.contains("/old/xleases:4194304"), "{why}");
        let fixed = with_lease(&wrong, &l, None).unwrap();
        assert_eq!(
            check_lease(&fixed, &l).unwrap(),
            LeaseCheck::Matches,
            "{fixed}"
        );
        assert!(!fixed.contains("/old/xleases"), "{fixed}");
        assert_eq!(fixed.matches("<lease>").count(), 1);
        // Another VM's lease in the same domain is left alone.
        let other = DOM.replace(
            "  </devices>",
            "    <lease><lockspace>ha</lockspace><key>db1</key><target path='/srv/ha/xleases' offset='5242880'/></lease>\n  </devices>",
        );
        let both = with_lease(&other, &l, None).unwrap();
        assert!(both.contains("<key>db1</key>") && both.contains("<key>web1</key>"));
    }

    #[test]
    fn names_and_bad_xml() {
        assert_eq!(domain_name(DOM).unwrap(), "web1");
        assert!(domain_name("<domain/>").is_err());
        assert!(check_lease("<vm/>", &lease()).is_err());
        assert!(check_lease("<domain><name>x", &lease()).is_err());
        let no_devices = "<domain type='qemu'><name>web1</name></domain>";
        let x = with_lease(no_devices, &lease(), None).unwrap();
        assert_eq!(
            check_lease(&x, &lease()).unwrap(),
            LeaseCheck::Matches,
            "{x}"
        );
    }

    #[test]
    fn libvirts_refusals_are_told_apart() {
        assert_eq!(
            judge_start_error(
                "error: resource busy: Failed to acquire lock: Lease is held by another host"
            ),
            Ok(crate::rv::SANLK_ACQUIRE_IDLIVE)
        );
        assert_eq!(
            judge_start_error("error: Failed to acquire lock: Resource temporarily unavailable"),
            Ok(-libc::EAGAIN)
        );
        // The lease held by another domain of this host is this host's
        // problem, as is anything else libvirt says.
        assert!(judge_start_error("error: Failed to acquire lock: File exists").is_err());
        assert!(
            judge_start_error("error: Failed to acquire lock: No space left on device").is_err()
        );
        assert!(judge_start_error("error: Cannot access storage file '/x.img'").is_err());
    }
}
